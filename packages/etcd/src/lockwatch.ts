import { raceAbort } from "@locks/core/backend";
import type { LockKeys } from "./layout.js";
import type { Watch, Watches } from "./watches.js";

/**
 * How many deletions a lock's watch remembers (by key name), so that a
 * waiter whose read came back after a deletion was delivered still learns of
 * it. Older ones are forgotten; a waiter whose read is older than what is
 * remembered reads again.
 */
const REMEMBERED = 1_024;
/**
 * How long a lock's watch outlives its last waiter: a client that takes the
 * same lock again soon (a worker loop) finds it open, and pays no watch
 * message and no round trip to open it again before joining the queue.
 */
const LINGER_MS = 2_000;
/**
 * How many waiters of one lock in one backend instance write their keys at
 * once. Thousands of waiters arriving together would otherwise queue
 * thousands of writes at the server, past their deadline (and etcd3 resets
 * its connections after a deadline): FIFO turns keep the queue order.
 */
const CONCURRENT_JOINS = 16;

/** A waiter's (or a queued holder's) place in a {@link LockWatch}. */
export interface Member {
  /** The keys whose deletion concerns it from now on; undefined: any key of the lock. */
  lookOut(keys: readonly Buffer[] | undefined): void;
  leave(): void;
}

/**
 * One watch on the deletions of a lock's range, shared by every waiter (and
 * every holder granted from the queue) of that lock in one backend instance:
 * a waiter costs the server nothing to join or leave, and a release sends
 * one event to each client waiting for the lock, whatever its number of
 * waiters. Each waiter looks up the deletions of the keys it cares about
 * (its own, the one or two in its way) by name.
 *
 * One watch delivers its events in revision order, so a deletion of a
 * waiter's own key is seen before any later deletion of the key in its way.
 */
export class LockWatch {
  /** Deletions after this revision are delivered (those up to it are in any later read). */
  readonly start: bigint;
  /** The latest deletion delivered (0n: none yet). */
  latest = 0n;
  /** False once the watch is gone (etcd cancelled it, the stream broke): deletions may be missed. */
  healthy = true;
  readonly #watch: Watch;
  /** The last deletion of each key name, oldest first (a Map keeps insertion order). */
  readonly #deleted = new Map<string, bigint>();
  /** Deletions at or before this revision may have been forgotten. */
  #forgottenUpTo: bigint;
  /** Members to tell of a deletion, by the key names they look out for; and those that look out for any. */
  readonly #byKey = new Map<string, Set<() => void>>();
  readonly #anyKey = new Set<() => void>();
  readonly #members = new Set<() => void>();
  #linger: NodeJS.Timeout | undefined;
  #joining = 0;
  /** Waiters waiting for their turn to write their keys, first come first. */
  readonly #turns: Array<() => void> = [];
  readonly #end: () => void;

  private constructor(watch: Watch, end: () => void) {
    this.#watch = watch;
    this.start = watch.revision;
    this.#forgottenUpTo = watch.revision;
    this.#end = end;
  }

  /** Opens the watch on `lock`'s range; `end` runs once it is cancelled or lost. */
  static async open(
    watches: Watches,
    lock: LockKeys,
    bound: { readonly signal: AbortSignal; readonly timeoutMs: number },
    end: () => void,
  ): Promise<LockWatch> {
    let self: LockWatch | undefined;
    const watch = await watches.watch(
      lock.base,
      lock.baseEnd,
      (revision, key) => {
        if (self !== undefined) self.#deletion(revision, key);
      },
      bound,
    );
    self = new LockWatch(watch, end);
    return self;
  }

  /**
   * Joins: `onChange` runs at each deletion of a key the member looks out
   * for (`lookOut`: none at first), and when the watch is lost. A release
   * wakes only the members it concerns, not every waiter of the instance.
   */
  join(onChange: () => void): Member {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    this.#members.add(onChange);
    let names: readonly string[] | undefined = [];
    const forget = (): void => {
      if (names === undefined) this.#anyKey.delete(onChange);
      else for (const name of names) this.#unlisten(name, onChange);
    };
    return {
      lookOut: (keys) => {
        forget();
        names = keys?.map((key) => key.toString("latin1"));
        if (names === undefined) this.#anyKey.add(onChange);
        else for (const name of names) this.#listen(name, onChange);
      },
      leave: () => {
        if (!this.#members.delete(onChange)) return;
        forget();
        if (this.#members.size > 0 || !this.healthy) return;
        this.#linger = setTimeout(() => this.close(), LINGER_MS);
        this.#linger.unref();
      },
    };
  }

  #listen(name: string, onChange: () => void): void {
    let set = this.#byKey.get(name);
    if (set === undefined) {
      set = new Set();
      this.#byKey.set(name, set);
    }
    set.add(onChange);
  }

  #unlisten(name: string, onChange: () => void): void {
    const set = this.#byKey.get(name);
    if (set?.delete(onChange) && set.size === 0) this.#byKey.delete(name);
  }

  /**
   * Waits for a turn to write a key into the lock's queue (see
   * {@link CONCURRENT_JOINS}); the returned function ends it.
   */
  async joinTurn(signal: AbortSignal): Promise<() => void> {
    if (this.#joining < CONCURRENT_JOINS) this.#joining++;
    else {
      const turn = new Promise<void>((resolve) => this.#turns.push(resolve));
      try {
        await raceAbort(turn, signal);
      } catch (error) {
        void turn.then(() => this.#nextTurn()); // its turn goes to the next one
        throw error;
      }
    }
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#nextTurn();
    };
  }

  #nextTurn(): void {
    const next = this.#turns.shift();
    if (next !== undefined) next();
    else this.#joining--;
  }

  /**
   * When `key` was last deleted, if after `revision`; undefined when it was
   * not; "unknown" when that far back is forgotten (or was never watched).
   */
  deletedAfter(key: Buffer, revision: bigint): bigint | undefined | "unknown" {
    if (revision < this.#forgottenUpTo) return "unknown";
    const at = this.#deleted.get(key.toString("latin1"));
    return at !== undefined && at > revision ? at : undefined;
  }

  #deletion(revision: bigint | undefined, key: Buffer | undefined): void {
    if (revision === undefined || key === undefined) {
      this.close();
      for (const member of [...this.#members]) member();
    } else {
      const name = key.toString("latin1");
      this.#deleted.delete(name);
      this.#deleted.set(name, revision);
      if (this.#deleted.size > REMEMBERED) {
        const [oldest, at] = this.#deleted.entries().next().value as [string, bigint];
        this.#deleted.delete(oldest);
        this.#forgottenUpTo = at;
      }
      this.latest = revision;
      for (const member of [...(this.#byKey.get(name) ?? []), ...this.#anyKey]) member();
    }
  }

  /** Cancels the watch (at once: close() of the backend, or once it lingered unused). */
  close(): void {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    if (!this.healthy) return;
    this.healthy = false;
    this.#watch.cancel();
    this.#end();
  }
}
