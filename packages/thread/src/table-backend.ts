import { setImmediate as nextTurn } from "node:timers/promises";
import {
  type Attempt,
  type Backend,
  type Capabilities,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  lockClosed,
  onAbort,
  type WaitOptions,
} from "@locks/core";
import {
  BUCKET_WORDS,
  ENTRY_WORDS,
  FIRST_ENTRY,
  FP_HI,
  FP_LO,
  type KeyRef,
  LATCH,
  SEQ,
  type SharedLockTable,
  STATE,
  TableView,
  WAITERS,
  WRITERS,
} from "./table.js";

type Grant = Attempt & { granted: true };

/** A hold of this instance: its bucket and entry (an entry stays bound while it is held). */
interface TableHold {
  readonly bucket: number;
  readonly entry: number;
  readonly shared: boolean;
  readonly fencingToken: bigint;
}

type WaitResult =
  | { readonly async: false; readonly value: "not-equal" | "timed-out" }
  | { readonly async: true; readonly value: Promise<"ok" | "timed-out"> };

/** Atomics.waitAsync (Node 16+, not yet in TypeScript's ES2023 lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(array: Int32Array, index: number, value: number, timeoutMs?: number): WaitResult;
  }
).waitAsync;

/**
 * How long a waiter sleeps before it looks again by itself. Wake-ups cannot
 * be lost (a waiter sleeps only while its bucket's sequence word still has
 * the value it read before its last attempt), so this is defence in depth;
 * its timer also keeps the thread alive while it waits, which a pending
 * Atomics.waitAsync does not do.
 */
const RECHECK_MS = 1_000;

/**
 * Attempts at the bucket latch before yielding to the event loop. The latch
 * is held for a few dozen instructions, so it is almost always free; when its
 * holder was descheduled mid-way, spinning longer would only burn the core
 * that thread needs, so the operation retries on the next turn instead.
 */
const LATCH_SPINS = 64;

const NOT_GRANTED: Attempt = Object.freeze({ granted: false });
const DONE: Promise<void> = Promise.resolve();
const TRUE: Promise<boolean> = Promise.resolve(true);
const FALSE: Promise<boolean> = Promise.resolve(false);

/** `#take` outcomes other than an entry index: the key is held in a mode that excludes this one... */
const BUSY = -1;
/** ...or the bucket's 7 entries are all bound to other keys... */
const FULL = -2;
/** ...or the key's holders took it with another limit (which `#take` leaves in `#heldLimit`). */
const MISMATCH = -3;

const CAPABILITIES: Capabilities = Object.freeze({
  scope: "process",
  ttl: false,
  fencing: true,
  shared: true,
  semaphore: true,
  // Woken waiters race for the key: grants are not in arrival order.
  fair: false,
  notify: true,
});

/**
 * Locks between the worker_threads of one process, over a shared table.
 *
 * A key hashes to a bucket of 7 entries; an entry is bound to one key (by a
 * 64-bit fingerprint) while that key is held or awaited by a writer, so
 * distinct keys never share a lock word. A bucket's entries are read and
 * changed under its latch, a word taken with one compare-and-swap and held
 * for a few instructions, never across an await; nothing ever blocks a
 * thread (Atomics.wait is not used). Waiters sleep with Atomics.waitAsync on
 * the bucket's sequence word; releases bump it and Atomics.notify.
 *
 * Owner checks are local: a hold can only end through the instance that took
 * it (the table has no TTL), so the instance's own map of holds is the exact
 * record of what an owner token may release.
 */
export class TableBackend implements Backend {
  readonly name = "thread";
  readonly capabilities = CAPABILITIES;
  readonly #table: TableView;
  readonly #words: Int32Array;
  readonly #holds = new Map<string, TableHold>();
  /** Ends the sleep of each of this instance's waiters (for close). */
  readonly #sleepers = new Set<() => void>();
  /** The sleepers' abort signals: one listener per signal (the core may share one across waits). */
  #closed = false;
  /** The holders' limit `#take` found when it returned MISMATCH. */
  #heldLimit = 0;

  constructor(table: SharedLockTable) {
    this.#table = new TableView(table);
    this.#words = this.#table.words;
  }

  tryAcquire(req: LockRequest): Promise<Attempt> {
    if (this.#closed) return Promise.reject(lockClosed("thread backend"));
    const ref = this.#table.locate(req.namespace, req.key);
    if (!this.#latch(ref.bucket))
      return this.#latchLater(ref.bucket).then(() => this.#try(req, ref));
    try {
      return Promise.resolve(this.#try(req, ref));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  async acquire(req: LockRequest, wait: WaitOptions): Promise<Grant> {
    if (this.#closed) throw lockClosed("thread backend");
    const { signal } = wait;
    signal.throwIfAborted();
    const words = this.#words;
    const ref = this.#table.locate(req.namespace, req.key);
    const shared = req.mode === "shared";
    // Counted before the first attempt: a release after that attempt then
    // sees a waiter and notifies (sequentially consistent atomics).
    Atomics.add(words, ref.bucket + WAITERS, 1);
    /** The entry on which this exclusive acquire is registered as a waiting writer. */
    let registered = -1;
    try {
      for (;;) {
        if (this.#closed) throw lockClosed("thread backend");
        signal.throwIfAborted();
        const seq = Atomics.load(words, ref.bucket + SEQ);
        if (this.#latch(ref.bucket)) {
          const entry = this.#take(ref, shared, req.limit, registered);
          if (entry >= 0) {
            registered = -1;
            this.#unlatch(ref.bucket);
            return this.#granted(req, ref.bucket, entry, shared);
          }
          if (entry === MISMATCH) {
            this.#unlatch(ref.bucket);
            // A registered writer is taken off its entry by the clean-up below.
            throw limitMismatch(req.limit, this.#heldLimit);
          }
          // Not granted: an exclusive waiter makes itself known, so that new
          // readers stop entering (no writer starvation).
          if (!shared && registered < 0) registered = this.#registerWriter(ref);
          this.#unlatch(ref.bucket);
          await this.#sleep(ref.bucket + SEQ, seq, signal);
        } else {
          await nextTurn();
        }
      }
    } finally {
      Atomics.sub(words, ref.bucket + WAITERS, 1);
      if (registered >= 0) {
        // Gave up (abort, close): a writer that waited may have been all that held readers back.
        await this.#latchLater(ref.bucket);
        words[registered + WRITERS]!--;
        this.#unbindIfIdle(registered);
        this.#unlatch(ref.bucket);
        this.#changed(ref.bucket);
      }
    }
  }

  extend(req: LockRequest, _ttlMs: number): Promise<boolean> {
    return this.#holds.has(req.owner) ? TRUE : FALSE;
  }

  release(req: LockRequest): Promise<void> {
    const hold = this.#holds.get(req.owner);
    if (hold === undefined) return DONE;
    this.#holds.delete(req.owner);
    return this.#free(hold);
  }

  /**
   * Who holds the key, read from the table under the bucket's latch: how
   * many holders, in which mode, with which limit. The table keeps no owner
   * or token per hold, so those are given for this instance's own holds only.
   */
  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    const ref = this.#table.locate(namespace, key);
    if (!this.#latch(ref.bucket)) await this.#latchLater(ref.bucket);
    const entry = this.#find(ref);
    const state = entry < 0 ? 0 : this.#words[entry + STATE]!;
    const limit = entry < 0 ? 1 : this.#table.limits[this.#table.limitIndex(entry)]!;
    this.#unlatch(ref.bucket);
    if (state === 0) return { held: false, holders: [] };
    const mode = state < 0 ? ("shared" as const) : ("exclusive" as const);
    const holders: Array<KeyStatus["holders"][number]> = [];
    for (const [owner, hold] of this.#holds) {
      if (hold.bucket === ref.bucket && hold.entry === entry) {
        holders.push({ owner, mode, fencingToken: hold.fencingToken });
      }
    }
    while (holders.length < Math.abs(state)) holders.push({ mode });
    return { held: true, limit, holders };
  }

  // An arrow property: wrappers may call it with a Proxy as `this`, on which #private fields throw.
  readonly close = async (): Promise<void> => {
    if (this.#closed) return;
    this.#closed = true;
    for (const interrupt of [...this.#sleepers]) interrupt();
    const holds = [...this.#holds.values()];
    this.#holds.clear();
    await Promise.all(holds.map((hold) => this.#free(hold)));
  };

  #try(req: LockRequest, ref: KeyRef): Attempt {
    const shared = req.mode === "shared";
    const entry = this.#take(ref, shared, req.limit, -1);
    this.#unlatch(ref.bucket);
    if (entry === MISMATCH) throw limitMismatch(req.limit, this.#heldLimit);
    return entry >= 0 ? this.#granted(req, ref.bucket, entry, shared) : NOT_GRANTED;
  }

  /**
   * Under the latch: takes the key when its mode fits beside the current
   * holders; returns the entry, or BUSY, FULL or MISMATCH (held with
   * another limit). `registered` is the entry on which this acquire waits as
   * a writer, or -1.
   */
  #take(ref: KeyRef, shared: boolean, limit: number, registered: number): number {
    const words = this.#words;
    let entry = registered >= 0 ? registered : this.#find(ref);
    if (entry < 0) {
      entry = this.#bind(ref);
      if (entry < 0) return FULL;
    }
    const state = words[entry + STATE]!;
    const limits = this.#table.limits;
    const at = this.#table.limitIndex(entry);
    if (state !== 0 && limits[at] !== limit) {
      this.#heldLimit = limits[at]!;
      return MISMATCH;
    }
    // The first holder sets the limit the others must use (readers: 1).
    if (state === 0) limits[at] = limit;
    if (shared) {
      if (state > 0 || words[entry + WRITERS] !== 0) return BUSY;
      words[entry + STATE] = state - 1;
    } else {
      if (state < 0 || state >= limit) return BUSY;
      words[entry + STATE] = state + 1;
      if (registered >= 0) words[entry + WRITERS]!--;
    }
    return entry;
  }

  /** Under the latch: registers a waiting writer on the key's entry; the entry, or -1 when the bucket is full. */
  #registerWriter(ref: KeyRef): number {
    const entry = this.#find(ref);
    if (entry >= 0) this.#words[entry + WRITERS]!++;
    return entry;
  }

  /** Under the latch: the entry bound to the key, or -1. */
  #find(ref: KeyRef): number {
    const words = this.#words;
    const end = ref.bucket + BUCKET_WORDS;
    for (let entry = ref.bucket + FIRST_ENTRY; entry < end; entry += ENTRY_WORDS) {
      if (words[entry + FP_HI] === ref.fpHi && words[entry + FP_LO] === ref.fpLo) return entry;
    }
    return -1;
  }

  /** Under the latch: binds a free entry to the key; -1 when the bucket is full. */
  #bind(ref: KeyRef): number {
    const words = this.#words;
    const end = ref.bucket + BUCKET_WORDS;
    for (let entry = ref.bucket + FIRST_ENTRY; entry < end; entry += ENTRY_WORDS) {
      if (words[entry + FP_HI] === 0) {
        words[entry + FP_LO] = ref.fpLo;
        words[entry + FP_HI] = ref.fpHi;
        words[entry + STATE] = 0;
        words[entry + WRITERS] = 0;
        return entry;
      }
    }
    return -1;
  }

  /** Under the latch: frees the entry once nobody holds it and no writer waits for it. */
  #unbindIfIdle(entry: number): void {
    const words = this.#words;
    if (words[entry + STATE] === 0 && words[entry + WRITERS] === 0) {
      words[entry + FP_HI] = 0;
      words[entry + FP_LO] = 0;
    }
  }

  #granted(req: LockRequest, bucket: number, entry: number, shared: boolean): Grant {
    const fencingToken = this.#table.nextToken();
    this.#holds.set(req.owner, { bucket, entry, shared, fencingToken });
    return { granted: true, fencingToken };
  }

  #free(hold: TableHold): Promise<void> {
    if (!this.#latch(hold.bucket)) {
      return this.#latchLater(hold.bucket).then(() => this.#freeLatched(hold));
    }
    this.#freeLatched(hold);
    return DONE;
  }

  #freeLatched(hold: TableHold): void {
    const words = this.#words;
    words[hold.entry + STATE]! += hold.shared ? 1 : -1;
    this.#unbindIfIdle(hold.entry);
    this.#unlatch(hold.bucket);
    this.#changed(hold.bucket);
  }

  #latch(bucket: number): boolean {
    const words = this.#words;
    for (let i = 0; i < LATCH_SPINS; i++) {
      if (Atomics.compareExchange(words, bucket + LATCH, 0, 1) === 0) return true;
    }
    return false;
  }

  async #latchLater(bucket: number): Promise<void> {
    while (!this.#latch(bucket)) await nextTurn();
  }

  #unlatch(bucket: number): void {
    Atomics.store(this.#words, bucket + LATCH, 0);
  }

  /** Wakes the bucket's waiters, in every thread, if there are any. */
  #changed(bucket: number): void {
    const words = this.#words;
    if (Atomics.load(words, bucket + WAITERS) === 0) return;
    Atomics.add(words, bucket + SEQ, 1);
    Atomics.notify(words, bucket + SEQ);
  }

  /** Sleeps until the word at `index` moves from `seen`, the signal aborts, close, or RECHECK_MS. */
  #sleep(index: number, seen: number, signal: AbortSignal): Promise<void> {
    const result = waitAsync(this.#words, index, seen, RECHECK_MS);
    if (!result.async) return DONE;
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        stopListening();
        this.#sleepers.delete(interrupt);
        resolve();
      };
      // Abort or close: also ends this thread's pending waitAsync now rather than at
      // its timeout, so nothing of the waiter is left behind (the bucket's other
      // sleepers wake too, re-check and sleep again).
      const interrupt = (): void => {
        wake();
        Atomics.notify(this.#words, index);
      };
      // Ref'd: a pending waitAsync alone does not keep a thread's event loop alive.
      const timer = setTimeout(wake, RECHECK_MS + 50);
      const stopListening = onAbort(signal, interrupt);
      this.#sleepers.add(interrupt);
      void result.value.then(wake);
    });
  }
}
