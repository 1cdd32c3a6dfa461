import type {
  Attempt,
  Backend,
  Capabilities,
  Grant,
  KeyEvent,
  KeyRef,
  KeyStatus,
  LockRequest,
  Unsubscribe,
  WaitOptions,
} from "@locks/core/backend";
import type { Connection } from "./connection.js";
import { FairQueue } from "./fair-queue.js";
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
 * each (one round trip); a release publishes a notification in the same
 * script when someone waits. The hold of a grant is the layout of its keys.
 *
 * Fair mode keeps a FIFO queue of waiters on the server, as Redisson's fair
 * lock: `acquire` joins it and declines, so the core waits by notification
 * (a release names the new head, and wakes only the client it waits in) and
 * a slow safety poll, as for any backend. The client refreshes its waiters'
 * entries in one command per key (`FairQueue`), and a waiter that gives up
 * leaves the queue when its signal aborts.
 */
export class ServerBackend implements Backend<KeyLayout> {
  readonly name = "redis";
  readonly capabilities: Capabilities;
  readonly #connection: Connection;
  readonly #settings: ServerSettings;
  readonly #notifications: Notifications;
  /** Fair mode: this client's waiters in the server's queues. */
  readonly #queue: FairQueue | undefined;

  constructor(connection: Connection, settings: ServerSettings) {
    this.#connection = connection;
    this.#settings = settings;
    const timeout = settings.commandTimeoutMs;
    const queue = settings.fair
      ? new FairQueue(settings.waiterTtlMs, (l, members) =>
          connection.run(
            scripts.refreshQueue,
            [l.queue, l.queueExpiry, l.queueSequence],
            [settings.waiterTtlMs, ...members],
            timeout,
          ),
        )
      : undefined;
    this.#queue = queue;
    this.#notifications = new Notifications(
      [connection],
      queue && ((channel, payload) => queue.concerns(channel, payload)),
    );
    this.capabilities = capabilities(true, settings.fair, SERVER_MIN_TTL_MS);
  }

  tryAcquire(request: LockRequest): Promise<Attempt<KeyLayout>> {
    const l = keyLayout(request);
    return this.#attempt(request, l, this.#queue?.has(request, l) === true);
  }

  /**
   * Not fair: declines (the core waits). Fair: joins the server's queue at
   * once, before any subscription (a first subscriber connection takes a
   * while: the queue's order is the order waiters started), and declines
   * unless that attempt was granted. The entry is removed when the wait's
   * signal aborts (timeout, abort, close) before a grant.
   */
  async acquire(request: LockRequest, wait: WaitOptions): Promise<Grant<KeyLayout> | undefined> {
    const queue = this.#queue;
    if (queue === undefined) return undefined;
    const l = keyLayout(request);
    queue.join(request, l, wait.signal, () => void this.#leave(request, l));
    try {
      const attempt = await this.#attempt(request, l, true);
      return attempt.granted ? attempt : undefined;
    } catch (error) {
      await this.#leave(request, l);
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
    const l = hold ?? keyLayout(request);
    this.#queue?.remove(request, l);
    const [keys, args] = releaseCall(request, l, this.#connection.publishCommand, fair);
    // Past this the hold (or queue entry) has expired on the server anyway.
    const within = Math.max(request.ttlMs, fair ? waiterTtlMs : 0);
    const timeout = this.#settings.commandTimeoutMs;
    await this.#connection.cleanUp(request.owner, scripts.release, keys, args, timeout, within);
  }

  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    return this.#notifications.subscribe(key, onChange);
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
    this.#queue?.close();
    await Promise.all([this.#notifications.close(), this.#connection.close()]);
  }

  /**
   * One attempt. A refusal's hint is when the key may change: the holder's
   * remaining lease, or (fair, free but others ahead) when the head's queue
   * entry would expire.
   */
  async #attempt(
    request: LockRequest,
    l: KeyLayout,
    enqueue: boolean,
  ): Promise<Attempt<KeyLayout>> {
    const mode = wireMode(request);
    // Not cut to the TTL: a reply later than the lease is a grant the core refuses as too
    // late (and releases), not a sign that the server is down.
    const timeout = this.#settings.commandTimeoutMs;
    const { owner, ttlMs, limit } = request;
    this.#connection.cancelCleanUp(owner);
    const reply = this.#settings.fair
      ? await this.#connection.run(
          scripts.fairAcquire,
          acquireKeys(l),
          withLabel(
            [owner, mode, ttlMs, limit, enqueue ? 1 : 0, this.#settings.waiterTtlMs],
            request,
          ),
          timeout,
        )
      : await this.#connection.run(
          scripts.acquire,
          acquireKeys(l),
          withLabel([owner, mode, ttlMs, limit, this.#mark(l)], request),
          timeout,
        );
    const attempt = parseAcquireReply(reply, request, l);
    // A grant removed the queue entry.
    if (enqueue && attempt.granted) this.#queue?.remove(request, l);
    return attempt;
  }

  /** The acquire script's mark: '+' while waiters of this client listen for the key's releases. */
  #mark(l: KeyLayout): string {
    return this.#notifications.listening(l.channel) ? "+" : "";
  }

  /** Leaves the queue, and releases what an attempt whose reply was lost may have taken (owner-checked). */
  async #leave(request: LockRequest, l: KeyLayout): Promise<void> {
    await this.release(request, l).catch(() => undefined);
  }
}
