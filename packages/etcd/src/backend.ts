import {
  type Attempt,
  type Backend,
  type BackendHost,
  type Capabilities,
  driftAllowance,
  type Grant,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  lockClosed,
  monotonicNow,
  raceAbort,
  retryInBackground,
  settledWithin,
  sleep,
  type Unsubscribe,
  type WaitOptions,
} from "@locks/core/backend";
import {
  type Etcd3,
  EtcdLeaseInvalidError,
  type ITxnResponse,
  type KVClient,
  type Namespace,
} from "etcd3";
import { retryBackoff } from "./backoff.js";
import { type CallOptions, Calls } from "./calls.js";
import { unavailable } from "./errors.js";
import { forceReleaseLock, inspectLock } from "./inspect.js";
import { contenderKey, contenderValue, type LockKeys, lockKeys } from "./layout.js";
import { LockWatch, type Member } from "./lockwatch.js";
import type { ResolvedOptions } from "./options.js";
import {
  type Contender,
  checkRequest,
  enqueueRequest,
  existingKey,
  limitConflict,
  moveRequest,
  oldestAt,
  type Position,
  positionOf,
  probeRequest,
  takeRequest,
} from "./queue.js";
import { Session, type SessionHost } from "./session.js";
import { Watches } from "./watches.js";

/**
 * The shortest `ttlMs` the backend accepts. etcd leases are whole seconds and
 * the server raises a shorter one to its minimum (1.5 x the election timeout:
 * 2 s by default), so a lock with a shorter TTL rides on a longer session
 * lease: its holder presumes it lost at its own deadline, and the core
 * releases it (this backend deletes its key) then, long before the server
 * could. What bounds the TTL from below is the grant itself: on a client's
 * first use a new session lease and the take are two writes through
 * consensus (etcd warns when applying one takes over 100 ms), plus the
 * connection, and a grant that arrives after the TTL cannot be trusted.
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
 * How long a lock must have been held before its key is watched for an
 * eviction (see `#guard`): most holds are shorter, and a watch set up and
 * cancelled per grant cost short uncontended cycles up to half their rate
 * in the benchmark (one run on a loaded machine: 1.86x the floor, not 1.1x).
 */
const GUARD_AFTER_MS = 250;
/**
 * How long a waiter that gives up (aborted, timed out, refused) waits for the
 * deletion of its key before it rejects, so that a caller who waits for the
 * acquire to settle (the core's `lead()`) finds nothing of it left in the
 * queue; a server that stopped answering must not hold an abort up longer.
 */
const GIVE_UP_GRACE_MS = 200;
/**
 * How long close() lets requests to the server finish (revoking the session
 * leases frees every key at once) before it cancels what is still waiting
 * for a server that stopped answering.
 */
const CLOSE_GRACE_MS = 200;

/**
 * One contender: its key in the lock's queue, and the session lease the key
 * lives in. A granted one is the hold the core passes back.
 */
interface Entry extends Contender {
  readonly ttlMs: number;
  /** The session whose lease the key is attached to (an extension to another TTL moves it). */
  session: Session<Entry>;
  /** The session whose lease id names the key, and the key's slot in it (see Session.takeSlot). */
  readonly namedBy: Session<Entry>;
  readonly slot: number;
  /** Create revision of the key: the fencing token once held. */
  revision: bigint | undefined;
  /** A write whose outcome is not known yet; a delete waits for it. */
  writing: Promise<unknown> | undefined;
  /** True once the key is deleted (or being deleted), or known gone or not ours. */
  done: boolean;
  /** Ends a waiter's current wait early: a deletion it watches, or its session's loss. */
  wake: (() => void) | undefined;
  /** The lock's own TTL: frees the key when no extension came in time (see `#expireAfter`). */
  expiry: NodeJS.Timeout | undefined;
  /** When `expiry` is due (monotonic ms). */
  expiresAt: number;
  /** Stops watching the key's deletion: leaves the lock's watch (`#wait`), or ends the guard or its timer (`#guard`). */
  unguard: (() => void) | undefined;
}

/**
 * The etcd backend: one lease session per TTL and the revision-ordered queue.
 * Waiting, deadlines and losses of the locks themselves are the core's.
 */
export class EtcdBackend implements Backend<Entry> {
  readonly name = "etcd";
  readonly capabilities: Capabilities = CAPABILITIES;
  /** Until `bind()`: losses go nowhere, and nothing closes before `close()`. */
  #host: BackendHost<Entry> = {
    lost: () => undefined,
    lostAll: () => undefined,
    closing: new AbortController().signal,
  };
  readonly #client: Namespace;
  readonly #kv: KVClient;
  readonly #owned: boolean;
  readonly #endpoints: readonly string[];
  /** Every gRPC call in flight: close() cancels what a silent server leaves hanging. */
  readonly #calls = new Calls();
  readonly #watches: Watches;
  readonly #requestTimeoutMs: number;
  readonly #sessionHost: SessionHost<Entry>;
  /** The session new contenders of a TTL (in whole seconds) join. */
  readonly #sessions = new Map<number, Session<Entry>>();
  readonly #granting = new Map<number, Promise<Session<Entry>>>();
  readonly #live = new Set<Session<Entry>>();
  /** Exclusive takes on their way, by lock: true once answered, false if it failed. */
  readonly #taking = new Map<LockKeys, Promise<boolean>>();
  /** The one watch of each lock that waiters of this instance wait on (by base key). */
  readonly #lockWatches = new Map<string, Promise<LockWatch>>();
  /** Locks recently found taken (by base key), oldest first: a contention hint for tryAcquire. */
  readonly #busy = new Map<string, number>();
  #closed: Promise<void> | undefined;
  #lastDigest: Buffer | undefined;
  #lastKeys: LockKeys | undefined;

  constructor(options: ResolvedOptions) {
    this.#client = options.client;
    this.#kv = options.client.kv;
    this.#owned = options.owned;
    this.#endpoints = options.endpoints;
    this.#watches = new Watches(options.client.watchClient, this.#calls);
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.#sessionHost = {
      leases: options.client.leaseClient,
      requestTimeoutMs: options.requestTimeoutMs,
      request: (ms = options.requestTimeoutMs) => this.#calls.request(ms),
      sessionLost: (session, reason, cause) => this.#sessionLost(session, reason, cause),
    };
  }

  bind(host: BackendHost<Entry>): void {
    this.#host = host;
  }

  tryAcquire(request: LockRequest): Promise<Attempt<Entry>> {
    return this.#mapped(this.#take(request));
  }

  acquire(request: LockRequest, wait: WaitOptions): Promise<Grant<Entry> | undefined> {
    return this.#mapped(this.#queue(request, wait.signal), wait.signal);
  }

  extend(_request: LockRequest, hold: Entry, ttlMs: number): Promise<boolean> {
    return this.#mapped(this.#extend(hold, ttlMs));
  }

  /**
   * Deletes the key behind `hold`. Without a hold there is nothing to do: a
   * take whose outcome is unknown already deleted what it may have written.
   */
  release(_request: LockRequest, hold: Entry | undefined): Promise<void> {
    return hold === undefined ? Promise.resolve() : this.#mapped(this.#discard(hold, true));
  }

  /**
   * One watch on the lock's range per key and client (the core shares it
   * among its waiters). A lease that ends on the server deletes its keys, so
   * an expiry is announced like a release; while the watch is gone (cancelled
   * by etcd, the stream broke) the core hears "unsure" and polls, until the
   * watch is back ("changed").
   */
  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    const lock = this.#keysOf(key.digest);
    const bound = { signal: this.#host.closing, timeoutMs: this.#requestTimeoutMs };
    return this.#mapped(this.#watches.follow(lock.base, lock.baseEnd, onChange, bound));
  }

  inspect(key: KeyRef): Promise<KeyStatus> {
    const lock = this.#keysOf(key.digest);
    return this.#mapped(
      inspectLock(this.#kv, this.#sessionHost.leases, lock, () => this.#request()),
    );
  }

  /**
   * Deletes the holders' keys in one transaction, their session leases left
   * alone (see `forceReleaseLock`). An evicted holder learns of it from the
   * watch on its key (`#guard`), or at the latest at its next extension.
   */
  forceRelease(key: KeyRef): Promise<boolean> {
    const lock = this.#keysOf(key.digest);
    return this.#mapped(forceReleaseLock(this.#kv, lock, () => this.#request()));
  }

  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  // --- taking ------------------------------------------------------------

  #take(request: LockRequest): Promise<Attempt<Entry>> {
    const lock = this.#keysOf(request.digest);
    if (request.limit > 1 || request.mode === "shared") return this.#takeNow(request, lock);
    const inFlight = this.#taking.get(lock);
    if (inFlight !== undefined) return this.#takeAfter(inFlight, request, lock);
    const taking = this.#takeNow(request, lock);
    const answered = taking.then(yes, no);
    this.#taking.set(lock, answered);
    void answered.then(() => {
      if (this.#taking.get(lock) === answered) this.#taking.delete(lock);
    });
    return taking;
  }

  /**
   * An exclusive take while another of the same lock by this instance is on
   * its way (thousands of waiters arriving at once make their first
   * attempts together): once that one is answered, the lock is taken either
   * way (by someone else, or by that take), so this one is refused without a
   * request. When that one failed, this one tries on its own.
   */
  async #takeAfter(
    inFlight: Promise<boolean>,
    request: LockRequest,
    lock: LockKeys,
  ): Promise<Attempt<Entry>> {
    if (await inFlight) return { granted: false };
    return this.#takeNow(request, lock);
  }

  async #takeNow(request: LockRequest, lock: LockKeys): Promise<Attempt<Entry>> {
    const start = monotonicNow();
    if (request.limit === 1 && this.#wasBusy(lock)) {
      // Found taken a moment ago: read first, so that a failed take costs no write.
      const probe = await this.#kv.txn(probeRequest(lock, request.mode), this.#request());
      const current = limitConflict({ limit: request.limit }, probe, 1);
      if (current !== undefined) throw limitMismatch(request.limit, current);
      if ((probe.responses[0]?.response_range?.kvs.length ?? 0) > 0) {
        this.#markBusy(lock);
        return { granted: false };
      }
    }
    for (let attempt = 0; ; attempt++) {
      const session = await this.#session(request.ttlMs);
      const entry = this.#enter(request, session, lock);
      let reply: ITxnResponse;
      try {
        // Not bounded by the TTL: a reply that comes too late is a refused grant (the core
        // releases it), not an unreachable server.
        const taking = this.#kv.txn(takeRequest(entry, session.id), this.#request());
        const freshening = this.#freshen(session, start, request.ttlMs);
        reply = await taking;
        if (freshening !== undefined) await freshening;
      } catch (error) {
        const leaseGone = this.#writeFailed(session, error);
        // The outcome is unknown: delete whatever the take may have written.
        void this.#discard(entry);
        // The session lease was revoked behind our back: nothing was written; use a new one.
        if (leaseGone && attempt === 0) continue;
        throw error;
      }
      try {
        return await this.#taken(entry, reply);
      } catch (error) {
        void this.#discard(entry);
        throw error;
      }
    }
  }

  /** The outcome of a take transaction. */
  async #taken(entry: Entry, reply: ITxnResponse): Promise<Attempt<Entry>> {
    if (!entry.session.alive) {
      // The session was lost while the take was in flight: never grant on it.
      await this.#discard(entry);
      return { granted: false };
    }
    if (reply.succeeded) {
      entry.revision = BigInt(reply.header.revision);
      return entry.limit > 1 ? this.#semaphore(entry, reply, 1) : this.#granted(entry);
    }
    const existing = existingKey(reply, entry.value);
    if (existing === undefined) {
      this.#forget(entry, true);
      const current = entry.limit === 1 ? limitConflict(entry, reply, 1) : undefined;
      if (current !== undefined) throw limitMismatch(entry.limit, current);
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
    if (entry.limit === 1) return this.#granted(entry);
    const check = await this.#kv.txn(checkRequest(entry, existing.revision), this.#request());
    if (check.succeeded) return this.#semaphore(entry, check, 0);
    await this.#discard(entry);
    return { granted: false };
  }

  /** A semaphore's key is written along with the read of its position: it holds, or goes again. */
  async #semaphore(entry: Entry, reply: ITxnResponse, from: number): Promise<Attempt<Entry>> {
    const current = limitConflict(entry, reply, oldestAt(entry, from));
    if (current === undefined && positionOf(entry, reply, from).holder) return this.#granted(entry);
    await this.#discard(entry);
    if (current !== undefined) throw limitMismatch(entry.limit, current);
    return { granted: false };
  }

  /**
   * A grant. Its validity ends at the earlier of the lock's TTL and what the
   * session's confirmed keepalives guarantee on the server. For a grant from
   * the queue the core takes it as the lease's deadline, so it must never lie
   * past either.
   */
  #granted(entry: Entry): Grant<Entry> {
    this.#expireAfter(entry, entry.ttlMs);
    // A grant from the queue keeps the lock's watch it waited on (see #wait).
    if (entry.unguard === undefined) this.#guard(entry);
    const local = monotonicNow() + entry.ttlMs - driftAllowance(entry.ttlMs);
    return {
      granted: true,
      fencingToken: entry.revision!,
      validUntil: Math.min(local, entry.session.validUntil()),
      hold: entry,
    };
  }

  /**
   * A write on `session` failed. When etcd no longer knows its lease, the
   * session is lost (true). Otherwise the outcome is unknown: no new
   * contender joins the session, whose lease, revoked once its keys are
   * gone, takes a late write along.
   */
  #writeFailed(session: Session<Entry>, error: unknown): boolean {
    if (error instanceof EtcdLeaseInvalidError) {
      session.lose("etcd no longer knows the session lease", error);
      return true;
    }
    session.retire();
    return false;
  }

  /** Sends a keepalive with a grant when the last one is too old to cover most of the TTL. */
  #freshen(session: Session<Entry>, start: number, ttlMs: number): Promise<void> | undefined {
    const since = start + ttlMs - session.ttlMs - ttlMs * FRESHNESS_SLACK;
    if (session.confirmedSince(since)) return undefined; // the usual case: nothing to wait for
    // On failure the grant's validity says how long it can be trusted.
    return session.confirmSince(since).catch(() => undefined);
  }

  // --- the queue ---------------------------------------------------------

  /**
   * Joins the queue and waits for the turn: a grant, or undefined (decline:
   * the core polls instead) when the key vanished (session lost, lease
   * revoked, deleted by someone else). Leaves nothing behind when it gives up.
   */
  async #queue(request: LockRequest, signal: AbortSignal): Promise<Grant<Entry> | undefined> {
    const session = await raceAbort(this.#session(request.ttlMs), signal);
    const entry = this.#enter(request, session, this.#keysOf(request.digest));
    let held: boolean;
    try {
      held = await this.#wait(entry, signal);
    } catch (error) {
      await settledWithin(this.#discard(entry), GIVE_UP_GRACE_MS);
      throw error;
    }
    // Never a grant once the signal aborted: the key goes back at once.
    if (held && !signal.aborted) return this.#granted(entry);
    await settledWithin(this.#discard(entry), GIVE_UP_GRACE_MS);
    signal.throwIfAborted();
    return undefined;
  }

  /**
   * Writes the key of `entry` and waits until it holds (true) or its key
   * vanished (false).
   *
   * While nothing happens the wait costs the server nothing: no poll. The
   * waiter joins its lock's one watch in this instance ({@link LockWatch},
   * opened by the first waiter of the lock, before its key is written) and
   * looks up the deletions of the keys it cares about: its own, the key in
   * its way (the predecessor) and the one before that (or any key, for a
   * semaphore). When the watch is lost (etcd cancelled it, the stream broke)
   * it is opened again, backing off, and the position is read once. Each
   * read is a transaction guarded by the own key's create revision.
   *
   * When the predecessor was the only key in the way, its deletion hands the
   * lock over without a read: keys older than ours never appear. The re-check
   * of RELIABILITY.md ("after any wait, your key still exists with your
   * create revision") rides on the same watch: it started before our last
   * guarded read, one watch delivers its events in revision order, so a
   * deletion of our key (a lease revoked from outside, a delete) is known
   * before the predecessor's later one. Our lease cannot have expired
   * meanwhile: the session's confirmed keepalives say so (`#freshen` renews
   * them when old, and the grant's validity is bounded by them). After the
   * grant the same watch reports an eviction (`#evicted`).
   */
  async #wait(entry: Entry, signal: AbortSignal): Promise<boolean> {
    let granted = false;
    let changed = false;
    let shared!: { readonly watch: LockWatch; readonly member: Member };
    const onChange = (): void => {
      if (!granted) {
        changed = true;
        entry.wake?.();
      } else if (shared.watch.deletedAfter(entry.key, entry.revision!) !== undefined) {
        this.#evicted(entry);
      }
    };
    /** Joins the lock's watch, backing off while it cannot be opened; false once the session is gone. */
    const join = async (): Promise<boolean> => {
      for (let backoff = retryBackoff(); ; backoff = backoff.next(undefined)) {
        try {
          shared = await this.#joinLockWatch(entry.lock, onChange, signal);
          entry.unguard = shared.member.leave;
          return true;
        } catch (error) {
          if (signal.aborted) throw error;
          if (!entry.session.alive) return false;
          await sleep(backoff.duration, signal);
        }
      }
    };
    // Joined before the key is written: every deletion after the write is seen.
    if (!(await join())) return false;
    const turnEnds = await shared.watch.joinTurn(signal);
    const writing = this.#kv.txn(enqueueRequest(entry, entry.session.id), this.#request());
    entry.writing = writing;
    let reply: ITxnResponse;
    try {
      reply = await raceAbort(writing, signal);
    } catch (error) {
      if (!signal.aborted && this.#writeFailed(entry.session, error)) return false;
      throw error;
    } finally {
      turnEnds();
    }
    entry.writing = undefined;
    let position: Position | undefined;
    let readAt: bigint;
    if (reply.succeeded) {
      entry.revision = readAt = BigInt(reply.header.revision);
      const current = limitConflict(entry, reply, oldestAt(entry, 1));
      if (current !== undefined) throw limitMismatch(entry.limit, current);
      position = positionOf(entry, reply, 1);
      if (!position.holder) this.#markBusy(entry.lock);
    } else {
      const existing = existingKey(reply, entry.value);
      if (existing === undefined || !existing.ours) return false;
      entry.revision = readAt = existing.revision;
    }
    let linearizable = false;
    const hold = async (): Promise<boolean> => {
      shared.member.lookOut([entry.key]); // from now on the guard of the hold
      const freshening = this.#freshen(entry.session, monotonicNow(), entry.ttlMs);
      if (freshening !== undefined) await raceAbort(freshening, signal);
      let gone = shared.watch.deletedAfter(entry.key, readAt);
      if (gone === "unknown") {
        // Forgotten meanwhile (a busy lock): the guarded read says whether our key is there.
        const read = await this.#readPosition(entry, signal, true);
        gone = read?.position.holder === true ? undefined : 0n;
      }
      granted = entry.session.alive && gone === undefined;
      return granted;
    };
    try {
      for (;;) {
        if (!shared.watch.healthy) {
          // The watch is gone: deletions may have been missed. Watch again, then read once.
          shared.member.leave();
          entry.unguard = undefined;
          if (!(await join())) return false;
          position = undefined;
          linearizable = true;
        }
        if (position === undefined) {
          const read = await this.#readPosition(entry, signal, linearizable);
          if (read === undefined) return false;
          ({ position, revision: readAt } = read);
          linearizable = false;
        }
        if (!entry.session.alive) return false;
        changed = false;
        const { watch } = shared;
        // A read older than the watch's start (a lagging member) cannot be followed.
        const own = readAt < watch.start ? "unknown" : watch.deletedAfter(entry.key, readAt);
        if (own !== undefined) {
          if (own !== "unknown") return false;
          linearizable = true;
          position = undefined;
          continue;
        }
        if (position.holder) return await hold();
        const { predecessor, before } = position;
        // Woken only by the deletions that concern this waiter (or any, for a semaphore).
        shared.member.lookOut(
          predecessor === undefined
            ? undefined
            : before === undefined
              ? [entry.key, predecessor]
              : [entry.key, predecessor, before],
        );
        if (predecessor === undefined) {
          // A semaphore: any deletion in the lock may let it in.
          if (watch.latest > readAt) position = undefined;
        } else {
          const first = watch.deletedAfter(predecessor, readAt);
          const second = before === undefined ? undefined : watch.deletedAfter(before, readAt);
          if (first === "unknown" || second === "unknown") {
            linearizable = true;
            position = undefined;
          } else if (first !== undefined && before === undefined) {
            // The only key in the way is gone, and no key older than ours can appear: the
            // lock is ours, with no read (see above for the own key's re-check).
            return await hold();
          } else if (first !== undefined || second !== undefined) {
            position = undefined; // a key in the way went: read where we stand now
          }
        }
        if (position === undefined || !watch.healthy) continue;
        // Until a deletion in the lock, the watch's loss or the session's: no request.
        await raceAbort(
          new Promise<void>((resolve) => {
            entry.wake = resolve;
            if (changed) resolve();
          }),
          signal,
        );
        entry.wake = undefined;
      }
    } finally {
      entry.wake = undefined;
    }
  }

  /**
   * Joins the one watch of `lock` in this instance, opening it for the first
   * waiter; the watch ends when its last waiter or queued holder leaves.
   */
  async #joinLockWatch(
    lock: LockKeys,
    onChange: () => void,
    signal: AbortSignal,
  ): Promise<{ readonly watch: LockWatch; readonly member: Member }> {
    const id = lock.base.toString("latin1");
    let opening = this.#lockWatches.get(id);
    if (opening === undefined || (await opening.catch(() => undefined))?.healthy === false) {
      const bound = { signal: this.#host.closing, timeoutMs: this.#requestTimeoutMs };
      const opened: Promise<LockWatch> = LockWatch.open(this.#watches, lock, bound, () => {
        if (this.#lockWatches.get(id) === opened) this.#lockWatches.delete(id);
      });
      opened.catch(() => {
        if (this.#lockWatches.get(id) === opened) this.#lockWatches.delete(id);
      });
      this.#lockWatches.set(id, opened);
      opening = opened;
    }
    // Joined even when the wait gave up meanwhile (and left at once), so that a watch
    // opened for nobody does not stay.
    const joined = opening.then((watch) => {
      const member = watch.join(onChange);
      if (signal.aborted) member.leave();
      return { watch, member };
    });
    return raceAbort(joined, signal);
  }

  /**
   * Reads where `entry` stands; undefined when its key is gone. Retries while its session lives.
   * Throws `limitMismatch` when the holders use another limit.
   */
  async #readPosition(
    entry: Entry,
    signal: AbortSignal,
    linearizable: boolean,
  ): Promise<{ position: Position; revision: bigint } | undefined> {
    const check = (serializable: boolean): Promise<ITxnResponse> =>
      raceAbort(
        this.#kv.txn(checkRequest(entry, entry.revision!, serializable), this.#request()),
        signal,
      );
    for (let backoff = retryBackoff(); ; backoff = backoff.next(undefined)) {
      let reply: ITxnResponse;
      try {
        reply = await check(!linearizable);
        // A lagging member may not have our key yet: only a linearizable read says it is gone.
        if (!reply.succeeded && !linearizable) reply = await check(false);
      } catch (error) {
        if (signal.aborted) throw error;
        if (!entry.session.alive) return undefined;
        await sleep(backoff.duration, signal);
        continue;
      }
      if (!reply.succeeded) return undefined;
      const current = limitConflict(entry, reply, oldestAt(entry, 0));
      if (current !== undefined) throw limitMismatch(entry.limit, current);
      return { position: positionOf(entry, reply, 0), revision: BigInt(reply.header.revision) };
    }
  }

  // --- held locks --------------------------------------------------------

  async #extend(entry: Entry, ttlMs: number): Promise<boolean> {
    if (entry.done || !entry.session.alive) return false;
    const start = monotonicNow();
    const revision = entry.revision!;
    if (secondsFor(ttlMs) === entry.session.seconds) {
      const session = entry.session;
      const [current] = await Promise.all([
        this.#kv.range({ key: entry.key }, this.#request()),
        session.confirmSince(start + ttlMs - session.ttlMs),
      ]);
      const kv = current.kvs[0];
      if (kv === undefined || BigInt(kv.create_revision) !== revision || kv.lease !== session.id) {
        // Deleted, or not what we wrote: not ours any more; a name still in use stays retired.
        this.#forget(entry, kv === undefined);
        return false;
      }
    } else {
      // Another TTL: move the key to that session's lease. Its create revision, the
      // queue position and the fencing token stay; only the lease changes.
      const target = await this.#session(ttlMs);
      const [moved] = await Promise.all([
        this.#kv.txn(moveRequest(entry, revision, target.id), this.#request()),
        target.confirmSince(start + ttlMs - target.ttlMs),
      ]);
      if (!moved.succeeded) {
        // Gone, or re-created by someone else: either way not ours; its name stays retired.
        this.#forget(entry, false);
        return false;
      }
      if (!entry.done) this.#move(entry, target);
    }
    if (entry.done || !entry.session.alive) return false;
    this.#expireAfter(entry, start + ttlMs - monotonicNow());
    return true;
  }

  /**
   * The TTL of one lock: frees its key `ms` from now unless it is extended or
   * released first. Its session lease outlives a holder that stopped
   * extending (it is kept alive for the whole backend instance), and the
   * store must free such a lock by itself (`capabilities.ttl`): the core
   * leaves a lease released before its `minHoldMs` to the store, and a
   * grant used without a lease has no watchdog. A crashed process's keys go
   * with its session lease.
   */
  #expireAfter(entry: Entry, ms: number): void {
    clearTimeout(entry.expiry);
    entry.expiresAt = monotonicNow() + ms;
    entry.expiry = setTimeout(() => void this.#discard(entry), Math.max(0, ms));
    entry.expiry.unref();
  }

  /**
   * Watches a held key's deletion by anyone but this instance (forceRelease
   * from another client, the session lease ended on the server) and reports
   * the loss at once, so `lease.signal` aborts within a watch event, not at
   * the next extension. Set up once the lock has been held for
   * {@link GUARD_AFTER_MS}: shorter holds never pay for it. The watch starts
   * just after the key's create revision, so a deletion before it was set up
   * is replayed. It rides on the instance's one watch stream (a message to set
   * it up, one to cancel it, no round trip waited for); the extension's read
   * of the key stays the check when a watch is lost.
   */
  #guard(entry: Entry): void {
    const timer = setTimeout(() => {
      if (this.#closed !== undefined) return; // close() ends the watch stream
      entry.unguard = this.#watches.guard(entry.key, entry.revision! + 1n, () =>
        this.#evicted(entry),
      );
    }, GUARD_AFTER_MS);
    timer.unref();
    entry.unguard = () => clearTimeout(timer);
  }

  /** A held key was deleted by someone else: the lock is lost. */
  #evicted(entry: Entry): void {
    if (entry.done || this.#closed !== undefined) return;
    this.#forget(entry, true);
    this.#host.lost(entry, "its key in etcd was deleted (forceRelease, or its lease ended)");
  }

  // --- entries -----------------------------------------------------------

  #enter(request: LockRequest, session: Session<Entry>, lock: LockKeys): Entry {
    const slot = session.takeSlot();
    const entry: Entry = {
      lock,
      key: contenderKey(lock, request.mode, session.hex, slot),
      value: contenderValue(request.owner, request.limit, request.holder),
      mode: request.mode,
      limit: request.limit,
      ttlMs: request.ttlMs,
      session,
      namedBy: session,
      slot,
      revision: undefined,
      writing: undefined,
      done: false,
      wake: undefined,
      expiry: undefined,
      expiresAt: 0,
      unguard: undefined,
    };
    session.members.add(entry);
    return entry;
  }

  /**
   * Deletes the key of `entry` (after any write in flight settled), once. A
   * delete that fails is retried in the background while the session lives
   * (its lease takes the key along when it ends); with `rethrow` the first
   * failure is also reported.
   */
  #discard(entry: Entry, rethrow = false): Promise<void> {
    if (entry.done) return Promise.resolve();
    this.#finish(entry);
    const removed = this.#remove(entry);
    return rethrow ? removed : removed.catch(ignore);
  }

  /** Deletes the key of a finished entry, then frees its name; see {@link #discard}. */
  async #remove(entry: Entry): Promise<void> {
    try {
      await this.#deleteKey(entry);
    } catch (error) {
      const retry = (): Promise<void> => this.#deleteKey(entry);
      void retryInBackground(retry, { signal: this.#host.closing }).then(() =>
        this.#dropMember(entry),
      );
      throw error;
    }
    this.#dropMember(entry);
  }

  async #deleteKey(entry: Entry): Promise<void> {
    if (entry.writing !== undefined) await entry.writing.catch(ignore);
    if (entry.session.alive) await this.#kv.deleteRange({ key: entry.key }, this.#request());
  }

  /**
   * Forgets an entry whose key is known to be gone or never written (`gone`),
   * or to be no longer ours (its name then stays retired).
   */
  #forget(entry: Entry, gone: boolean): void {
    if (entry.done) return;
    this.#finish(entry);
    if (gone) this.#dropMember(entry);
    else this.#leave(entry);
  }

  /** Marks `entry` done: no more expiry, guard or wait on it. */
  #finish(entry: Entry): void {
    entry.done = true;
    clearTimeout(entry.expiry);
    entry.unguard?.();
  }

  /** The key of `entry` is deleted: its name can be reused, its session may end. */
  #dropMember(entry: Entry): void {
    entry.namedBy.freeSlot(entry.slot);
    this.#leave(entry);
  }

  #leave(entry: Entry): void {
    entry.session.members.delete(entry);
    this.#endIfIdle(entry.session);
  }

  #move(entry: Entry, target: Session<Entry>): void {
    this.#leave(entry);
    entry.session = target;
    target.members.add(entry);
  }

  /** True when this instance found `lock` taken within the last {@link BUSY_MEMORY_MS}. */
  #wasBusy(lock: LockKeys): boolean {
    const at = this.#busy.get(lock.base.toString("latin1"));
    return at !== undefined && monotonicNow() - at < BUSY_MEMORY_MS;
  }

  #markBusy(lock: LockKeys): void {
    const id = lock.base.toString("latin1");
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
      granting = Session.grant(this.#sessionHost, seconds)
        .then((session) => {
          if (this.#closed !== undefined) {
            void session.end();
            throw lockClosed("etcd backend");
          }
          this.#sessions.set(seconds, session);
          this.#live.add(session);
          return session;
        })
        .finally(() => this.#granting.delete(seconds));
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
      // A holder's lock is lost (the core releases it: its key went with the lease); a
      // waiter wakes, finds its key gone and declines.
      this.#host.lost(entry, `the etcd session lease was lost: ${reason}`, cause);
      entry.wake?.();
    }
  }

  // --- plumbing ----------------------------------------------------------

  /**
   * The keys of the lock named by `digest`. The core hands the same digest
   * object to requests that name the same key, so the last one is kept: a
   * hot lock builds its keys once, not at every take.
   */
  #keysOf(digest: Buffer): LockKeys {
    if (digest !== this.#lastDigest) {
      this.#lastKeys = lockKeys(this.#client.prefix, digest);
      this.#lastDigest = digest;
    }
    return this.#lastKeys!;
  }

  /** Call options for one request: the deadline, and close()'s cancellation. */
  #request(): CallOptions {
    return this.#calls.request(this.#requestTimeoutMs);
  }

  /**
   * Errors in the words of {@link unavailable}: the endpoints tried and the
   * plain cause; once `signal` aborted, its reason as it is.
   */
  #mapped<T>(pending: Promise<T>, signal?: AbortSignal): Promise<T> {
    return pending.catch((error: unknown) => {
      throw signal?.aborted ? signal.reason : unavailable(error, this.#endpoints);
    });
  }

  /**
   * Before `session` is revoked: the keys in it that are still held (the core
   * releases every lease before close(), but leaves one released before its
   * `minHoldMs` to the store) move to a lease of their own, for what remains
   * of their TTL, that nobody keeps alive: the store frees them when their
   * time is up, as it would after a crash. Best effort: a key that cannot
   * move goes with the session.
   */
  async #keepAfterClose(session: Session<Entry>): Promise<void> {
    const now = monotonicNow();
    const kept = [...session.members].filter(
      (entry) => !entry.done && entry.expiry !== undefined && entry.expiresAt > now,
    );
    await Promise.allSettled(
      kept.map(async (entry) => {
        const { ID } = await this.#sessionHost.leases.leaseGrant(
          { TTL: secondsFor(entry.expiresAt - now) },
          this.#request(),
        );
        await this.#kv.txn(moveRequest(entry, entry.revision!, ID), this.#request());
      }),
    );
  }

  async #close(): Promise<void> {
    for (const opening of this.#lockWatches.values()) void opening.then((w) => w.close(), ignore);
    this.#lockWatches.clear();
    this.#watches.close();
    // Revoking the session leases frees every key this instance wrote, at once. A server
    // that stopped answering gets CLOSE_GRACE_MS; then every call still waiting is cancelled.
    const ending = Promise.allSettled([
      ...this.#granting.values(),
      ...[...this.#live].map(async (session) => {
        await this.#keepAfterClose(session);
        await session.end();
      }),
    ]);
    for (const session of this.#live)
      for (const entry of session.members) {
        clearTimeout(entry.expiry);
        entry.unguard?.();
      }
    await settledWithin(ending, CLOSE_GRACE_MS);
    this.#calls.cancelAll();
    await ending;
    this.#live.clear();
    this.#sessions.clear();
    if (this.#owned) (this.#client as Etcd3).close();
  }
}

function yes(): boolean {
  return true;
}

function no(): boolean {
  return false;
}

/** A rejection handler that drops the error (one function, not a closure per call). */
function ignore(): undefined {
  return undefined;
}

/** etcd lease TTLs are whole seconds: round up (the server raises it to its minimum). */
function secondsFor(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}
