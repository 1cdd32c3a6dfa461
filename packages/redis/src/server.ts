import {
  type Attempt,
  type Backend,
  type Capabilities,
  driftAllowance,
  type KeyStatus,
  type LockRequest,
  lockClosed,
  monotonicNow,
  settledWithin,
  type Unsubscribe,
  type WaitOptions,
} from "@locks/core";
import type { Connection } from "./connection.js";
import { fairAcquire } from "./fair.js";
import { type KeyLayout, keyLayout } from "./layout.js";
import { Notifier } from "./notifier.js";
import { scripts } from "./scripts.js";
import { type Snapshot, statusFromSnapshot } from "./status.js";
import { CLOSE_RELEASE_WAIT_MS, SERVER_MIN_TTL_MS } from "./timing.js";
import { Waiters } from "./waiters.js";
import {
  acquireKeys,
  holdersKey,
  parseAcquireReply,
  releaseTag,
  wireMode,
  withHolders,
} from "./wire.js";

/** Settings of a single-server or Cluster backend. */
export interface ServerSettings {
  readonly prefix: string;
  readonly commandTimeoutMs: number;
  readonly fair: boolean;
  readonly waiterTtlMs: number;
}

/**
 * One Redis server or one Redis Cluster: every lock lives on one node, in
 * keys that share a hash tag. Acquire, extend and release are one Lua script
 * each (one round trip); release publishes a notification in the same script.
 */
export class ServerBackend implements Backend {
  readonly name = "redis";
  readonly capabilities: Capabilities;
  /** Present only in fair mode: waiters queue on the server (FIFO). */
  declare readonly acquire?: (
    request: LockRequest,
    wait: WaitOptions,
  ) => Promise<Attempt & { granted: true }>;

  readonly #connection: Connection;
  readonly #settings: ServerSettings;
  readonly #waiters = new Waiters();
  readonly #notifier: Notifier;
  /** Holds granted through this instance, released by `close()`. */
  readonly #held = new Map<string, LockRequest>();
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;

  constructor(connection: Connection, settings: ServerSettings) {
    this.#connection = connection;
    this.#settings = settings;
    this.#notifier = new Notifier(
      connection,
      (channel, payload) => this.#waiters.dispatch(channel, payload),
      () => this.#waiters.wakeAll(),
    );
    this.capabilities = Object.freeze({
      scope: "cluster",
      ttl: true,
      fencing: true,
      shared: true,
      semaphore: true,
      fair: settings.fair,
      notify: true,
      minTtlMs: SERVER_MIN_TTL_MS,
    });
    if (settings.fair) {
      Object.defineProperty(this, "acquire", {
        value: (request: LockRequest, wait: WaitOptions) => this.#fairAcquire(request, wait),
        enumerable: true,
      });
    }
  }

  tryAcquire(request: LockRequest): Promise<Attempt> {
    if (this.#closed !== undefined) return Promise.reject(lockClosed("redis backend"));
    this.#waiters.consume(request.owner);
    return this.#attempt(request, false);
  }

  async extend(request: LockRequest, ttlMs: number): Promise<boolean> {
    if (this.#closed !== undefined) throw lockClosed("redis backend");
    const l = this.#layout(request);
    const mode = wireMode(request);
    const reply = await this.#connection.run(
      scripts.extend,
      withHolders([l.exclusive], l, mode),
      [request.owner, mode, ttlMs],
      this.#settings.commandTimeoutMs,
    );
    if (reply === 1) return true;
    this.#held.delete(request.owner);
    return false;
  }

  async release(request: LockRequest): Promise<void> {
    // After close() everything this instance held was released: nothing left to do.
    if (this.#closing.signal.aborted) return;
    await this.#release(request);
  }

  async subscribe(request: LockRequest, onChange: () => void): Promise<Unsubscribe> {
    if (this.#closed !== undefined) throw lockClosed("redis backend");
    const channel = this.#layout(request).channel;
    this.#waiters.add(this.#notifier.serverName(channel), {
      owner: request.owner,
      mode: wireMode(request),
      limit: request.limit,
      wake: onChange,
    });
    await this.#notifier.retain(channel);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#waiters.remove(request.owner);
      this.#notifier.release(channel);
    };
  }

  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    if (this.#closed !== undefined) throw lockClosed("redis backend");
    const l = keyLayout(this.#settings.prefix, namespace, key);
    const reply = await this.#connection.run(
      scripts.inspect,
      [l.exclusive, l.readers, l.slots, l.fence],
      [],
      this.#settings.commandTimeoutMs,
    );
    return statusFromSnapshot(reply as Snapshot);
  }

  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    // Releases still go out while closing, for a moment; new work is refused.
    const held = [...this.#held.values()];
    await settledWithin(
      held.map((request) => this.#release(request)),
      CLOSE_RELEASE_WAIT_MS,
    );
    this.#closing.abort(lockClosed("redis backend"));
    await Promise.all([this.#notifier.close(), this.#connection.close()]);
  }

  #layout(request: LockRequest): KeyLayout {
    return keyLayout(this.#settings.prefix, request.namespace, request.key);
  }

  async #attempt(request: LockRequest, enqueue: boolean): Promise<Attempt> {
    const l = this.#layout(request);
    const mode = wireMode(request);
    // Not cut to the TTL: a reply later than the lease is a grant the core refuses as too
    // late (and releases), not a sign that the server is down.
    const timeout = this.#settings.commandTimeoutMs;
    const start = monotonicNow();
    const reply = this.#settings.fair
      ? await this.#connection.run(
          scripts.fairAcquire,
          [...acquireKeys(l), l.queue, l.queueExpiry, l.queueSequence],
          [
            request.owner,
            mode,
            request.ttlMs,
            request.limit,
            enqueue ? 1 : 0,
            this.#settings.waiterTtlMs,
          ],
          timeout,
        )
      : await this.#connection.run(
          scripts.acquire,
          acquireKeys(l),
          [request.owner, mode, request.ttlMs, request.limit],
          timeout,
        );
    const attempt = parseAcquireReply(reply, request);
    if (!attempt.granted) return attempt;
    this.#held.set(request.owner, request);
    // A queued grant may come long after the wait began: date the lease from this attempt.
    return { ...attempt, validUntil: start + request.ttlMs - driftAllowance(request.ttlMs) };
  }

  /** Owner-checked release (in fair mode it also leaves the queue); retried after a reconnect if it failed. */
  async #release(request: LockRequest): Promise<void> {
    const l = this.#layout(request);
    const fair = this.#settings.fair;
    const mode = wireMode(request);
    const z = holdersKey(l, mode);
    const keys = fair
      ? [l.exclusive, l.channel, z, l.queue, l.queueExpiry]
      : withHolders([l.exclusive, l.channel], l, mode);
    const args = [
      request.owner,
      mode,
      this.#connection.publishCommand,
      releaseTag(request),
      fair ? 1 : 0,
    ];
    const run = (): Promise<unknown> =>
      this.#connection.run(scripts.release, keys, args, this.#settings.commandTimeoutMs);
    try {
      await run();
      this.#held.delete(request.owner);
    } catch (error) {
      this.#held.delete(request.owner);
      // The hold (or queue entry) stays until its TTL unless the server is reachable again before.
      const until = monotonicNow() + Math.max(request.ttlMs, fair ? this.#settings.waiterTtlMs : 0);
      this.#connection.defer(`release:${request.owner}`, run, until);
      throw error;
    }
  }

  #fairAcquire(request: LockRequest, wait: WaitOptions): Promise<Attempt & { granted: true }> {
    if (this.#closed !== undefined) return Promise.reject(lockClosed("redis backend"));
    const channel = this.#layout(request).channel;
    return fairAcquire(
      {
        attempt: () => {
          this.#waiters.consume(request.owner);
          return this.#attempt(request, true);
        },
        leave: () => this.#release(request),
        refreshMs: this.#settings.waiterTtlMs / 3,
        waiters: this.#waiters,
        channelName: this.#notifier.serverName(channel),
        retain: () => this.#notifier.retain(channel),
        unretain: () => this.#notifier.release(channel),
        closing: this.#closing.signal,
      },
      request,
      wait.signal,
    );
  }
}
