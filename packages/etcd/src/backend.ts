import {
  type Attempt,
  type Backend,
  type Capabilities,
  driftAllowance,
  type KeyStatus,
  type LockRequest,
  type LossReport,
  limitMismatch,
  lockClosed,
  monotonicNow,
  onAbort,
  settledWithin,
  type Unsubscribe,
  type WaitOptions,
} from "@locks/core";
import {
  type Etcd3,
  EtcdLeaseInvalidError,
  type ITxnResponse,
  type KVClient,
  type Namespace,
} from "etcd3";
import { retryBackoff, sleep } from "./backoff.js";
import { type CallOptions, Calls } from "./calls.js";
import { unavailable } from "./errors.js";
import { inspectLock } from "./inspect.js";
import { contenderValue, Layout, type LockKeys } from "./layout.js";
import type { ResolvedOptions } from "./options.js";
import {
  type Contender,
  checkRequest,
  enqueueRequest,
  existingKey,
  limitConflict,
  oldestAt,
  type Position,
  positionOf,
  probeRequest,
  takeRequest,
} from "./queue.js";
import { Session, type SessionHost } from "./session.js";
import { DeletionWatch, sameTarget } from "./wait.js";
import { WatchStream } from "./watches.js";

/**
 * The shortest `ttlMs` the backend accepts. etcd leases are whole seconds and
 * the server raises a shorter one to its minimum (1.5 x the election timeout:
 * 2 s by default), so a lock with a shorter TTL rides on a longer session
 * lease: its holder presumes it lost at its own deadline, and this backend
 * deletes its key then, long before the server could. What bounds the TTL
 * from below is the grant itself: on a client's first use a new session
 * lease and the take are two writes through consensus (etcd warns when
 * applying one takes over 100 ms), plus the connection, and a grant that
 * arrives after the TTL cannot be trusted.
 */
const ETCD_MIN_TTL_MS = 250;

const CAPABILITIES: Capabilities = Object.freeze({
  scope: "cluster",
  ttl: true,
  fencing: true,
  shared: true,
  semaphore: true,
  fair: true,
  notify: true,
  minTtlMs: ETCD_MIN_TTL_MS,
});

/** A waiter re-reads its position at least this often, in case a watch event is missed. */
const FALLBACK_POLL_MS = 1_000;
/**
 * Share of the TTL a grant may lose to the age of the session's last
 * keepalive before a fresh keepalive is sent along with the grant.
 */
const FRESHNESS_SLACK = 0.1;
/**
 * How long a lock found taken is presumed contended: a tryAcquire on it reads
 * before it writes. Bounded memory: the oldest marks are dropped first.
 */
const BUSY_MEMORY_MS = 2_000;
const BUSY_MAX = 1_024;
/**
 * How long close() lets requests to the server finish (revoking the session
 * leases frees every key at once) before it cancels what is still waiting
 * for a server that stopped answering.
 */
const CLOSE_GRACE_MS = 200;

type EntryState = "taking" | "waiting" | "held" | "gone";

/** One attempt of one owner: its key in the queue, and where it stands. */
interface Entry extends Contender {
  readonly request: LockRequest;
  readonly value: Buffer;
  session: Session<Entry>;
  /** The session whose lease id names the key, and the key's slot in it (see Session.takeSlot). */
  readonly namedBy: Session<Entry>;
  readonly slot: number;
  /** True once the slot went back to `namedBy`. */
  slotFreed: boolean;
  state: EntryState;
  /** Create revision of the key: the fencing token once held. */
  revision: bigint | undefined;
  /** False only when it is known that no key was written. */
  written: boolean;
  /** A write whose outcome is not known yet; clean-ups wait for it. */
  writing: Promise<unknown> | undefined;
  ttlMs: number;
  /** Local TTL: deletes the key when the holder stops extending. */
  expiry: NodeJS.Timeout | undefined;
  /** Ends the current wait early (session lost, backend closed). */
  wake: (() => void) | undefined;
}

/** Result of one pass through the queue. */
type QueueOutcome = "held" | "vanished";

/**
 * The etcd backend: one lease session per TTL, the revision-ordered queue,
 * local TTLs for holders that stop extending, and loss reports.
 */
export class EtcdBackend implements Backend {
  readonly name = "etcd";
  readonly capabilities: Capabilities = CAPABILITIES;
  readonly #client: Namespace;
  readonly #kv: KVClient;
  readonly #owned: boolean;
  readonly #endpoints: readonly string[];
  /** Every gRPC call in flight: close() cancels what a silent server leaves hanging. */
  readonly #calls = new Calls();
  readonly #watches: WatchStream;
  /** Aborts on close(): ends the backend's own sleeps. */
  readonly #closeController = new AbortController();
  readonly #layout: Layout;
  readonly #requestTimeoutMs: number;
  readonly #host: SessionHost<Entry>;
  readonly #entries = new Map<string, Entry>();
  /** The session new contenders of a TTL (in whole seconds) join. */
  readonly #sessions = new Map<number, Session<Entry>>();
  readonly #granting = new Map<number, Promise<Session<Entry>>>();
  readonly #live = new Set<Session<Entry>>();
  readonly #listeners = new Set<(report: LossReport) => void>();
  readonly #cleanups = new Set<Promise<void>>();
  /** Locks recently found taken (by base key), oldest first: a contention hint for tryAcquire. */
  readonly #busy = new Map<string, number>();
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: ResolvedOptions) {
    this.#client = options.client;
    this.#kv = options.client.kv;
    this.#owned = options.owned;
    this.#endpoints = options.endpoints;
    this.#watches = new WatchStream(options.client.watchClient, this.#calls);
    this.#layout = new Layout(options.client.prefix, options.prefix);
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.#host = {
      leases: options.client.leaseClient,
      requestTimeoutMs: options.requestTimeoutMs,
      deadline: (ms) => this.#deadline(ms),
      stream: () => this.#calls.stream(),
      sessionLost: (session, reason, cause) => this.#sessionLost(session, reason, cause),
    };
  }

  async tryAcquire(req: LockRequest): Promise<Attempt> {
    this.#assertOpen();
    const start = monotonicNow();
    const lock = this.#layout.lock(req.namespace, req.key);
    if (req.limit === 1 && this.#wasBusy(lock)) {
      // Found taken a moment ago: read first, so that a failed take costs no write.
      const probe = await this.#kv
        .txn(probeRequest(lock, req.mode), this.#deadline(this.#requestTimeoutMs))
        .catch((error: unknown) => {
          throw this.#unavailable(error);
        });
      const current = limitConflict({ limit: req.limit }, probe, 1);
      if (current !== undefined) throw limitMismatch(req.limit, current);
      if ((probe.responses[0]?.response_range?.kvs.length ?? 0) > 0) {
        this.#markBusy(lock);
        return { granted: false };
      }
    }
    for (let attempt = 0; ; attempt++) {
      const session = await this.#session(req.ttlMs);
      const entry = this.#enter(req, session, "taking", lock);
      const fresh = this.#freshen(session, start, req.ttlMs);
      // Not bounded by the TTL: a reply that comes too late is a refused grant (the core
      // releases it), not an unreachable server.
      const writing = this.#kv.txn(
        takeRequest(entry, entry.value, session.id),
        this.#deadline(this.#requestTimeoutMs),
      );
      entry.writing = writing;
      let reply: ITxnResponse;
      try {
        [reply] = await Promise.all([writing, fresh]);
      } catch (error) {
        entry.writing = undefined;
        if (leaseGone(error) && attempt === 0) {
          // The session lease was revoked behind our back: nothing was written; use a new one.
          entry.written = false;
          this.#forget(entry);
          session.markLost("etcd no longer knows the session lease", error);
          continue;
        }
        // Unknown outcome: the core calls release(req), which deletes the key if it was written.
        session.retire();
        throw this.#unavailable(error);
      }
      entry.writing = undefined;
      return this.#taken(entry, reply);
    }
  }

  /** The outcome of a take transaction. */
  async #taken(entry: Entry, reply: ITxnResponse): Promise<Attempt> {
    if (this.#closing) {
      await this.#discard(entry);
      throw lockClosed("etcd backend");
    }
    if (!entry.session.alive) {
      // The session was lost while the take was in flight: never grant on it.
      await this.#discard(entry);
      return { granted: false };
    }
    if (reply.succeeded) {
      entry.revision = BigInt(reply.header.revision);
      if (entry.limit > 1) {
        const current = limitConflict(entry, reply, oldestAt(entry, 1));
        if (current !== undefined) {
          await this.#discard(entry);
          throw limitMismatch(entry.limit, current);
        }
        if (!positionOf(entry, reply, 1).holder) {
          await this.#discard(entry);
          return { granted: false };
        }
      }
      return this.#granted(entry);
    }
    const existing = existingKey(reply, entry.value);
    if (existing === undefined) {
      const current = entry.limit === 1 ? limitConflict(entry, reply, 1) : undefined;
      if (current !== undefined) {
        entry.written = false;
        this.#forget(entry);
        throw limitMismatch(entry.limit, current);
      }
      entry.written = false;
      this.#forget(entry);
      this.#markBusy(entry.lock);
      return { granted: false };
    }
    if (!existing.ours) {
      // A leftover under our own name: delete it, grant nothing.
      await this.#discard(entry);
      return { granted: false };
    }
    // etcd3 retried a take that had succeeded: the key is ours.
    entry.revision = existing.revision;
    if (entry.limit > 1) {
      const check = await this.#kv
        .txn(checkRequest(entry, existing.revision), this.#deadline(this.#requestTimeoutMs))
        .catch((error: unknown) => {
          throw this.#unavailable(error);
        });
      const current = check.succeeded ? limitConflict(entry, check, oldestAt(entry, 0)) : undefined;
      if (current !== undefined) {
        await this.#discard(entry);
        throw limitMismatch(entry.limit, current);
      }
      if (!check.succeeded || !positionOf(entry, check, 0).holder) {
        await this.#discard(entry);
        return { granted: false };
      }
    }
    return this.#granted(entry);
  }

  async acquire(req: LockRequest, wait: WaitOptions): Promise<Attempt & { granted: true }> {
    const { signal } = wait;
    this.#assertOpen();
    signal.throwIfAborted();
    for (;;) {
      const session = await abortable(this.#session(req.ttlMs), signal);
      const entry = this.#enter(req, session, "waiting");
      let outcome: QueueOutcome;
      try {
        outcome = await this.#queue(entry, signal);
      } catch (error) {
        void this.#discard(entry);
        if (signal.aborted) throw signal.reason;
        if (this.#closing) throw lockClosed("etcd backend");
        throw this.#unavailable(error);
      }
      if (outcome === "held") return this.#granted(entry);
      // Our key vanished (session lost, lease revoked, deleted by someone else): queue again,
      // after a keepalive tells whether the session itself is gone.
      void this.#discard(entry);
      await abortable(
        entry.session.confirmSince(monotonicNow()).catch(() => undefined),
        signal,
      );
    }
  }

  async extend(req: LockRequest, ttlMs: number): Promise<boolean> {
    const entry = this.#entries.get(req.owner);
    if (entry === undefined || entry.state !== "held" || !entry.session.alive) return false;
    const start = monotonicNow();
    const revision = entry.revision!;
    try {
      if (secondsFor(ttlMs) === entry.session.seconds) {
        const session = entry.session;
        const [current] = await Promise.all([
          this.#kv.range({ key: entry.key }, this.#deadline(this.#requestTimeoutMs)),
          session.confirmSince(start + ttlMs - session.ttlMs),
        ]);
        const kv = current.kvs[0];
        if (
          kv === undefined ||
          BigInt(kv.create_revision) !== revision ||
          kv.lease !== session.id
        ) {
          this.#forget(entry, kv === undefined);
          return false;
        }
      } else {
        // Another TTL: move the key to that session's lease. Its create revision, the
        // queue position and the fencing token stay; only the lease changes.
        const target = await this.#session(ttlMs);
        const [moved] = await Promise.all([
          this.#kv.txn(
            {
              compare: [
                {
                  key: entry.key,
                  target: "Create",
                  result: "Equal",
                  create_revision: revision.toString(),
                },
              ],
              success: [{ request_put: { key: entry.key, value: entry.value, lease: target.id } }],
              failure: [],
            },
            this.#deadline(this.#requestTimeoutMs),
          ),
          target.confirmSince(start + ttlMs - target.ttlMs),
        ]);
        if (!moved.succeeded) {
          // Gone, or re-created by someone else: either way it is not ours; keep its name retired.
          this.#forget(entry, false);
          return false;
        }
        if (entry.state === "held") this.#move(entry, target);
      }
    } catch (error) {
      throw this.#unavailable(error);
    }
    if (entry.state !== "held" || !entry.session.alive) return false;
    entry.ttlMs = ttlMs;
    this.#armExpiry(entry, start + ttlMs);
    return true;
  }

  async release(req: LockRequest): Promise<void> {
    const entry = this.#entries.get(req.owner);
    if (entry === undefined) return;
    await this.#discard(entry, true);
  }

  async subscribe(req: LockRequest, onChange: () => void): Promise<Unsubscribe> {
    this.#assertOpen();
    const lock = this.#layout.lock(req.namespace, req.key);
    // A broken watch stream calls onChange once and ends the watch; the core's bounded
    // polling covers the rest.
    const watch = await this.#watches
      .watch(lock.base, lock.baseEnd, () => onChange())
      .catch((error: unknown) => {
        throw this.#unavailable(error);
      });
    return () => watch.cancel();
  }

  // onLoss and close are bound: they work when called detached or through a Proxy.
  readonly onLoss = (listener: (report: LossReport) => void): Unsubscribe => {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  };

  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    this.#assertOpen();
    try {
      return await inspectLock(this.#kv, this.#host.leases, this.#layout, namespace, key, () =>
        this.#deadline(this.#requestTimeoutMs),
      );
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  readonly close = (): Promise<void> => {
    this.#closed ??= this.#close();
    return this.#closed;
  };

  // --- the queue ---------------------------------------------------------

  /** Joins the queue and waits for the turn of `entry`. */
  async #queue(entry: Entry, signal: AbortSignal): Promise<QueueOutcome> {
    const writing = this.#kv.txn(
      enqueueRequest(entry, entry.value, entry.session.id),
      this.#deadline(this.#requestTimeoutMs),
    );
    entry.writing = writing;
    let reply: ITxnResponse;
    try {
      reply = await abortable(writing, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      if (leaseGone(error)) {
        entry.written = false;
        entry.writing = undefined;
        entry.session.markLost("etcd no longer knows the session lease", error);
        return "vanished";
      }
      entry.session.retire();
      throw error;
    }
    entry.writing = undefined;
    let position: Position | undefined;
    let readAt: bigint;
    if (reply.succeeded) {
      entry.revision = BigInt(reply.header.revision);
      const current = limitConflict(entry, reply, oldestAt(entry, 1));
      if (current !== undefined) throw limitMismatch(entry.limit, current);
      position = positionOf(entry, reply, 1);
      readAt = entry.revision;
      if (!position.holder) this.#markBusy(entry.lock);
    } else {
      const existing = existingKey(reply, entry.value);
      if (existing === undefined || !existing.ours) return "vanished";
      entry.revision = existing.revision;
      readAt = existing.revision;
    }
    let watch: DeletionWatch | undefined;
    let linearizable = false;
    let backoff = retryBackoff();
    try {
      for (;;) {
        if (this.#closing) throw lockClosed("etcd backend");
        if (position === undefined) {
          const read = await this.#readPosition(entry, signal, linearizable);
          if (read === undefined) return "vanished";
          position = read.position;
          readAt = read.revision;
          linearizable = false;
        }
        if (!entry.session.alive) return "vanished";
        if (position.holder) {
          await abortable(this.#freshen(entry.session, monotonicNow(), entry.ttlMs), signal);
          if (!entry.session.alive) return "vanished";
          return "held";
        }
        const target = {
          key: position.predecessor ?? entry.lock.base,
          prefix: position.predecessor === undefined,
        };
        if (watch === undefined || watch.fired || !sameTarget(watch.target, target)) {
          watch?.close();
          watch = await DeletionWatch.open(this.#watches, target, signal, FALLBACK_POLL_MS);
          if (watch === undefined) {
            // No watch now (stream down): poll, backing off.
            await sleep(backoff.duration, signal, this.#closeController.signal);
            backoff = backoff.next(undefined);
            position = undefined;
            continue;
          }
          backoff = retryBackoff();
          if (watch.revision !== readAt) {
            // Writes happened between the read and the watch: read again at a revision the
            // watch covers (linearizable, so it is not older than the watch's start).
            position = undefined;
            linearizable = true;
            continue;
          }
        }
        await watch.wait(signal, FALLBACK_POLL_MS, (wake) => {
          entry.wake = wake;
        });
        // After any wait: re-read, guarded by our own key and its create revision.
        position = undefined;
      }
    } finally {
      watch?.close();
    }
  }

  /**
   * Reads where `entry` stands; undefined when its key is gone. Retries while its session lives.
   * Throws `limitMismatch` when the holders use another limit.
   */
  async #readPosition(
    entry: Entry,
    signal: AbortSignal,
    linearizable = false,
  ): Promise<{ position: Position; revision: bigint } | undefined> {
    let backoff = retryBackoff();
    for (;;) {
      let reply: ITxnResponse;
      try {
        const check = (serializable: boolean): Promise<ITxnResponse> =>
          abortable(
            this.#kv.txn(
              checkRequest(entry, entry.revision!, serializable),
              this.#deadline(this.#requestTimeoutMs),
            ),
            signal,
          );
        reply = await check(!linearizable);
        // A lagging member may not have our key yet: only a linearizable read says it is gone.
        if (!reply.succeeded && !linearizable) reply = await check(false);
      } catch (error) {
        if (signal.aborted || this.#closing) throw error;
        if (!entry.session.alive) return undefined;
        await sleep(backoff.duration, signal, this.#closeController.signal);
        backoff = backoff.next(undefined);
        continue;
      }
      if (!reply.succeeded) return undefined;
      const current = limitConflict(entry, reply, oldestAt(entry, 0));
      if (current !== undefined) throw limitMismatch(entry.limit, current);
      return { position: positionOf(entry, reply, 0), revision: BigInt(reply.header.revision) };
    }
  }

  /** Sends a keepalive with a grant when the last one is too old to cover most of the TTL. */
  #freshen(session: Session<Entry>, start: number, ttlMs: number): Promise<void> {
    return session
      .confirmSince(start + ttlMs - session.ttlMs - ttlMs * FRESHNESS_SLACK)
      .catch(() => undefined); // the grant's validity then says how long it can be trusted
  }

  // --- entries -----------------------------------------------------------

  #enter(
    request: LockRequest,
    session: Session<Entry>,
    state: EntryState,
    lock: LockKeys = this.#layout.lock(request.namespace, request.key),
  ): Entry {
    const slot = session.takeSlot();
    const entry: Entry = {
      request,
      lock,
      key: this.#layout.contender(lock, request.mode, session.hex, slot),
      namedBy: session,
      slot,
      slotFreed: false,
      mode: request.mode,
      limit: request.limit,
      value: contenderValue(request.owner, request.limit),
      session,
      state,
      revision: undefined,
      written: true,
      writing: undefined,
      ttlMs: request.ttlMs,
      expiry: undefined,
      wake: undefined,
    };
    this.#entries.set(request.owner, entry);
    session.members.add(entry);
    return entry;
  }

  /**
   * Marks `entry` held. Its validity ends at the earlier of the local TTL
   * (this instance deletes the key then, unless extended) and what the
   * session's confirmed keepalives guarantee on the server. For a grant from
   * the queue the core takes it as the lease's deadline, so it must never lie
   * past either.
   */
  #granted(entry: Entry): Attempt & { granted: true } {
    entry.state = "held";
    const now = monotonicNow();
    this.#armExpiry(entry, now + entry.ttlMs);
    const local = now + entry.ttlMs - driftAllowance(entry.ttlMs);
    return {
      granted: true,
      fencingToken: entry.revision!,
      validUntil: Math.min(local, entry.session.validUntil()),
    };
  }

  /**
   * The local TTL. The session lease outlives a holder that stopped
   * extending (it is kept alive for the whole backend), so the backend frees
   * such a lock itself `ttlMs` after the grant or the last extension. If the
   * process dies instead, the session lease frees it on the server.
   */
  #armExpiry(entry: Entry, at: number): void {
    if (entry.expiry !== undefined) clearTimeout(entry.expiry);
    entry.expiry = setTimeout(
      () => {
        entry.expiry = undefined;
        if (entry.state !== "held") return;
        if (monotonicNow() < at) {
          this.#armExpiry(entry, at);
          return;
        }
        this.#report({
          owner: entry.request.owner,
          reason: "its TTL passed without an extension",
        });
        void this.#discard(entry);
      },
      Math.max(0, Math.ceil(at - monotonicNow())),
    );
    entry.expiry.unref();
  }

  #move(entry: Entry, target: Session<Entry>): void {
    const previous = entry.session;
    previous.members.delete(entry);
    entry.session = target;
    target.members.add(entry);
    this.#endIfIdle(previous);
  }

  /**
   * Forgets an entry whose key is known to be gone or never written; with
   * `gone` false (the key exists but is not what we wrote) its name is not reused.
   */
  #forget(entry: Entry, gone = true): void {
    entry.state = "gone";
    if (entry.expiry !== undefined) clearTimeout(entry.expiry);
    entry.expiry = undefined;
    if (this.#entries.get(entry.request.owner) === entry) this.#entries.delete(entry.request.owner);
    if (gone) this.#dropMember(entry);
    else {
      entry.slotFreed = true;
      entry.session.members.delete(entry);
      this.#endIfIdle(entry.session);
    }
  }

  /**
   * Deletes the key of `entry` (after any write in flight settled) and
   * forgets it. If the delete fails it is retried in the background while the
   * session lives; with `rethrow` the first failure is also reported.
   */
  #discard(entry: Entry, rethrow = false): Promise<void> {
    if (entry.state === "gone") return Promise.resolve();
    entry.state = "gone";
    if (entry.expiry !== undefined) clearTimeout(entry.expiry);
    entry.expiry = undefined;
    if (this.#entries.get(entry.request.owner) === entry) this.#entries.delete(entry.request.owner);
    const first = (async () => {
      if (entry.writing !== undefined) await entry.writing.catch(() => undefined);
      if (!entry.written || !entry.session.alive) return;
      await this.#kv.deleteRange({ key: entry.key }, this.#deadline(this.#requestTimeoutMs));
    })();
    const done = first.then(
      () => this.#dropMember(entry),
      (error: unknown) => {
        this.#retryDelete(entry);
        if (rethrow) throw this.#unavailable(error);
      },
    );
    return rethrow ? done : done.catch(() => undefined);
  }

  #retryDelete(entry: Entry): void {
    const cleanup = (async () => {
      let backoff = retryBackoff();
      while (entry.session.alive && !this.#closing) {
        const slept = await sleep(backoff.duration, this.#closeController.signal).then(
          () => true,
          () => false,
        );
        if (!slept || !entry.session.alive || this.#closing) break;
        try {
          await this.#kv.deleteRange({ key: entry.key }, this.#deadline(this.#requestTimeoutMs));
          this.#dropMember(entry);
          return;
        } catch {
          backoff = backoff.next(undefined);
        }
      }
      // The session ended: its lease takes the key with it; the name is never reused.
      entry.slotFreed = true;
      entry.session.members.delete(entry);
      this.#endIfIdle(entry.session);
    })();
    this.#cleanups.add(cleanup);
    void cleanup.finally(() => this.#cleanups.delete(cleanup));
  }

  /** The key of `entry` is deleted: its name can be reused, its session may end. */
  #dropMember(entry: Entry): void {
    if (!entry.slotFreed) {
      entry.slotFreed = true;
      entry.namedBy.freeSlot(entry.slot);
    }
    entry.session.members.delete(entry);
    this.#endIfIdle(entry.session);
  }

  /** True when this instance found `lock` taken within the last {@link BUSY_MEMORY_MS}. */
  #wasBusy(lock: LockKeys): boolean {
    const at = this.#busy.get(lock.base.toString());
    return at !== undefined && monotonicNow() - at < BUSY_MEMORY_MS;
  }

  #markBusy(lock: LockKeys): void {
    const id = lock.base.toString();
    this.#busy.delete(id);
    this.#busy.set(id, monotonicNow());
    if (this.#busy.size > BUSY_MAX) {
      const oldest = this.#busy.keys().next().value;
      if (oldest !== undefined) this.#busy.delete(oldest);
    }
  }

  // --- sessions ----------------------------------------------------------

  #session(ttlMs: number): Promise<Session<Entry>> {
    const seconds = secondsFor(ttlMs);
    const current = this.#sessions.get(seconds);
    if (current?.open) return Promise.resolve(current);
    let granting = this.#granting.get(seconds);
    if (granting === undefined) {
      granting = Session.grant(this.#host, seconds).then(
        (session) => {
          this.#granting.delete(seconds);
          if (this.#closing) {
            void session.end();
            throw lockClosed("etcd backend");
          }
          this.#sessions.set(seconds, session);
          this.#live.add(session);
          return session;
        },
        (error: unknown) => {
          this.#granting.delete(seconds);
          throw this.#unavailable(error);
        },
      );
      this.#granting.set(seconds, granting);
    }
    return granting;
  }

  /** A retired session with no keys left ends: its lease is revoked. */
  #endIfIdle(session: Session<Entry>): void {
    if (session.members.size > 0 || session.open || !session.alive) return;
    this.#live.delete(session);
    void session.end();
  }

  #sessionLost(session: Session<Entry>, reason: string, cause?: unknown): void {
    if (this.#sessions.get(session.seconds) === session) this.#sessions.delete(session.seconds);
    this.#live.delete(session);
    for (const entry of [...session.members]) {
      if (entry.state === "held") {
        this.#forget(entry);
        this.#report({
          owner: entry.request.owner,
          reason: `the etcd session lease was lost: ${reason}`,
          ...(cause !== undefined ? { cause } : {}),
        });
      } else {
        // A waiter re-reads, finds its session gone and queues again on a new one.
        entry.wake?.();
      }
    }
  }

  #report(report: LossReport): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(report);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  // --- plumbing ----------------------------------------------------------

  #deadline(ms: number): CallOptions {
    // gRPC deadlines are wall-clock instants; every other deadline here is monotonic.
    return this.#calls.request(ms);
  }

  #unavailable(error: unknown): Error {
    return unavailable(error, this.#endpoints);
  }

  #assertOpen(): void {
    if (this.#closing) throw lockClosed("etcd backend");
  }

  async #close(): Promise<void> {
    this.#closing = true;
    this.#closeController.abort(lockClosed("etcd backend"));
    let held = false;
    for (const entry of this.#entries.values()) {
      if (entry.state === "held") held = true;
      if (entry.expiry !== undefined) clearTimeout(entry.expiry);
      entry.wake?.();
    }
    if (held) this.#report({ reason: "the etcd backend was closed" });
    this.#watches.close();
    // Revoking the session leases frees every key this instance wrote, at once. A server
    // that stopped answering gets CLOSE_GRACE_MS; then every call still waiting is cancelled.
    const ending = Promise.allSettled([
      ...this.#granting.values(),
      ...[...this.#live].map((session) => session.end()),
      ...this.#cleanups,
    ]);
    await settledWithin(ending, CLOSE_GRACE_MS);
    this.#calls.cancelAll();
    await ending;
    this.#live.clear();
    this.#sessions.clear();
    this.#entries.clear();
    if (this.#owned) (this.#client as Etcd3).close();
  }
}

/** etcd lease TTLs are whole seconds: round up (the server raises it to its minimum). */
function secondsFor(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/** etcd refused a write because the lease it names is gone (revoked or expired). */
function leaseGone(error: unknown): boolean {
  return error instanceof EtcdLeaseInvalidError;
}

/** `promise`, or a rejection with `signal.reason` as soon as the signal aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    // The signal may be shared by every wait of a client: one listener per signal (core's onAbort).
    const stop = onAbort(signal, reject);
    promise.then(
      (value) => {
        stop();
        resolve(value);
      },
      (error: unknown) => {
        stop();
        reject(error);
      },
    );
  });
}
