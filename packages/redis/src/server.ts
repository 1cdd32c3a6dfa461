import type {
  Attempt,
  Backend,
  Capabilities,
  Grant,
  KeyRef,
  KeyStatus,
  LockRequest,
  Unsubscribe,
} from "@locks/core/backend";
import type { Connection } from "./connection.js";
import { type KeyLayout, keyLayout } from "./layout.js";
import { Notifications } from "./notifier.js";
import { scripts } from "./scripts.js";
import { SERVER_MIN_TTL_MS } from "./timing.js";
import {
  acquireKeys,
  capabilities,
  forceReleaseCall,
  holdKeys,
  parseAcquireReply,
  readStatus,
  releaseCall,
  wireMode,
  withLabel,
} from "./wire.js";

/** Settings of a single-server or Cluster backend. */
export interface ServerSettings {
  readonly commandTimeoutMs: number;
  readonly fair: boolean;
  readonly waiterTtlMs: number;
}

/**
 * One Redis server or one Redis Cluster: every lock lives on one node, in
 * keys that share a hash tag. Acquire, extend and release are one Lua script
 * each (one round trip); release publishes a notification in the same script.
 * The hold of a grant is the layout of its keys.
 *
 * Fair mode keeps a FIFO queue of waiters on the server, as Redisson's fair
 * lock: `acquire` joins it and declines, so the core waits by notification
 * and polling as for any backend; each attempt of a queued request refreshes
 * its queue entry (the hint it returns is at most a third of the entry's
 * TTL), and a request that stops waiting without a grant leaves the queue
 * when the core unsubscribes it.
 */
export class ServerBackend implements Backend<KeyLayout> {
  readonly name = "redis";
  readonly capabilities: Capabilities;
  readonly #connection: Connection;
  readonly #settings: ServerSettings;
  readonly #notifications: Notifications;
  /**
   * Fair mode: the requests that joined the server's queue: true while they
   * may have an entry there, false once granted (a grant removes the entry).
   */
  readonly #queued = new WeakMap<LockRequest, boolean>();

  constructor(connection: Connection, settings: ServerSettings) {
    this.#connection = connection;
    this.#settings = settings;
    this.#notifications = new Notifications([connection]);
    this.capabilities = capabilities(true, settings.fair, SERVER_MIN_TTL_MS);
  }

  tryAcquire(request: LockRequest): Promise<Attempt<KeyLayout>> {
    return this.#attempt(request, this.#queued.has(request));
  }

  /**
   * Not fair: declines (the core polls). Fair: joins the server's queue at
   * once, before any subscription (a first subscriber connection takes a
   * while: the queue's order is the order waiters started), and declines
   * unless that attempt was granted.
   */
  async acquire(request: LockRequest): Promise<Grant<KeyLayout> | undefined> {
    if (!this.#settings.fair) return undefined;
    this.#queued.set(request, true);
    try {
      const attempt = await this.#attempt(request, true);
      return attempt.granted ? attempt : undefined;
    } catch (error) {
      await this.#leave(request);
      throw error;
    }
  }

  /** Owner-checked: an evicted (force-released) or expired hold is not extended. */
  async extend(request: LockRequest, hold: KeyLayout, ttlMs: number): Promise<boolean> {
    const reply = await this.#connection.run(
      scripts.extend,
      holdKeys(request, hold),
      [request.owner, wireMode(request), ttlMs],
      this.#settings.commandTimeoutMs,
    );
    return reply === 1;
  }

  /** Owner-checked (in fair mode it also leaves the queue); retried in the background if it failed. */
  async release(request: LockRequest, hold: KeyLayout | undefined): Promise<void> {
    const { fair, waiterTtlMs } = this.#settings;
    const l = hold ?? keyLayout(request.digest);
    const [keys, args] = releaseCall(request, l, this.#connection.publishCommand, fair);
    // Past this the hold (or queue entry) has expired on the server anyway.
    const within = Math.max(request.ttlMs, fair ? waiterTtlMs : 0);
    const timeout = this.#settings.commandTimeoutMs;
    await this.#connection.cleanUp(scripts.release, keys, args, timeout, within);
  }

  async subscribe(request: LockRequest, onChange: () => void): Promise<Unsubscribe> {
    const remove = await this.#notifications.subscribe(request, onChange);
    return () => {
      remove();
      // A fair waiter that stops waiting without a grant leaves the queue.
      if (this.#queued.get(request) === true) return this.#leave(request);
    };
  }

  inspect(key: KeyRef): Promise<KeyStatus> {
    return readStatus(this.#connection, key, this.#settings.commandTimeoutMs);
  }

  /**
   * One script frees every holder and wakes the waiters. Run once, never
   * retried in the background: a late retry could evict a later holder.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    const [keys, args] = forceReleaseCall(key, this.#connection.publishCommand);
    const timeout = this.#settings.commandTimeoutMs;
    return (await this.#connection.run(scripts.forceRelease, keys, args, timeout)) === 1;
  }

  async close(): Promise<void> {
    await Promise.all([this.#notifications.close(), this.#connection.close()]);
  }

  async #attempt(request: LockRequest, enqueue: boolean): Promise<Attempt<KeyLayout>> {
    const l = keyLayout(request.digest);
    const mode = wireMode(request);
    // Not cut to the TTL: a reply later than the lease is a grant the core refuses as too
    // late (and releases), not a sign that the server is down.
    const timeout = this.#settings.commandTimeoutMs;
    const { owner, ttlMs, limit } = request;
    const reply = this.#settings.fair
      ? await this.#connection.run(
          scripts.fairAcquire,
          [...acquireKeys(l), l.queue, l.queueExpiry, l.queueSequence],
          withLabel(
            [owner, mode, ttlMs, limit, enqueue ? 1 : 0, this.#settings.waiterTtlMs],
            request,
          ),
          timeout,
        )
      : await this.#connection.run(
          scripts.acquire,
          acquireKeys(l),
          withLabel([owner, mode, ttlMs, limit], request),
          timeout,
        );
    const attempt = parseAcquireReply(reply, request, l);
    if (!enqueue) return attempt;
    this.#queued.set(request, !attempt.granted);
    if (attempt.granted) return attempt;
    // Tried again before the queue entry needs its refresh (a third of its TTL).
    const refreshMs = Math.floor(this.#settings.waiterTtlMs / 3);
    return { granted: false, retryAfterMs: Math.min(attempt.retryAfterMs ?? 0, refreshMs - 1) };
  }

  /** Leaves the queue, and releases what an attempt whose reply was lost may have taken (owner-checked). */
  async #leave(request: LockRequest): Promise<void> {
    this.#queued.delete(request);
    await this.release(request, undefined).catch(() => undefined);
  }
}
