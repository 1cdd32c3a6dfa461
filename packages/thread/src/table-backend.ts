// Atomics.waitAsync (Node 16+) is typed in ES2024, beyond the ES2023 lib the repository compiles with.
/// <reference lib="es2024.sharedmemory" />
import { setImmediate as nextTurn } from "node:timers/promises";
import {
  type Attempt,
  type Backend,
  type Capabilities,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  scopedKey,
  type Unsubscribe,
} from "@locks/core/backend";
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

/**
 * A hold of the table, the `hold` of a grant: its bucket and entry (an entry
 * stays bound while it is held). The table keeps no owner per hold: a hold
 * can only end through this object, which the core passes back.
 */
class TableHold {
  /** False once released: a second release must not free another holder's place. */
  live = true;

  constructor(
    readonly bucket: number,
    readonly entry: number,
    readonly shared: boolean,
  ) {}
}

/**
 * Attempts at the bucket latch before yielding to the event loop. The latch
 * is held for a few dozen instructions, so it is almost always free; when its
 * holder was descheduled mid-way, spinning longer would only burn the core
 * that thread needs, so the operation retries on the next turn instead.
 */
const LATCH_SPINS = 64;

/**
 * How long a watch of a bucket's sequence word waits before it waits again:
 * a watch left pending after its subscription ended is gone by then, even
 * if the word never moves again.
 */
const WATCH_MS = 1_000;

const NOT_GRANTED: Attempt<TableHold> = Object.freeze({ granted: false });
const DONE: Promise<void> = Promise.resolve();

/** `#take` outcomes other than an entry index: the key is held in a mode that excludes this one... */
const BUSY = -1;
/** ...or the bucket's 7 entries are all bound to other keys... */
const FULL = -2;
/** ...or the key's holders took it with another limit (which `#take` leaves in `#heldLimit`). */
const MISMATCH = -3;

/**
 * Locks between the worker_threads of one process, over a shared table.
 *
 * A key hashes to a bucket of 7 entries; an entry is bound to one key (by a
 * 64-bit fingerprint) while that key is held or awaited by a writer, so
 * distinct keys never share a lock word. A bucket's entries are read and
 * changed under its latch, a word taken with one compare-and-swap and held
 * for a few instructions, never across an await; nothing ever blocks a
 * thread (Atomics.wait is not used).
 *
 * Waiting is the core's (notification plus bounded polling): `subscribe`
 * counts the waiter on its bucket, watches the bucket's sequence word with
 * Atomics.waitAsync, and registers a waiting writer on its key so that new
 * readers stop entering; releases bump the word and Atomics.notify.
 */
export class TableBackend implements Backend<TableHold> {
  readonly name = "thread";
  readonly capabilities: Capabilities;
  readonly #table: TableView;
  readonly #words: Int32Array;
  /** The holders' limit `#take` found when it returned MISMATCH. */
  #heldLimit = 0;

  constructor(table: SharedLockTable, capabilities: Capabilities) {
    this.capabilities = capabilities;
    this.#table = new TableView(table);
    this.#words = this.#table.words;
  }

  tryAcquire(req: LockRequest): Promise<Attempt<TableHold>> {
    const ref = this.#table.locate(req.scoped);
    if (!this.#latch(ref.bucket))
      return this.#latchLater(ref.bucket).then(() => this.#try(req, ref));
    return this.#try(req, ref);
  }

  /**
   * Calls `onChange` whenever the key's bucket changes, until unsubscribed.
   * Counted on the bucket before the core's next attempt, so a release after
   * that attempt sees a waiter and notifies (sequentially consistent atomics).
   */
  async subscribe(req: LockRequest, onChange: () => void): Promise<Unsubscribe> {
    const ref = this.#table.locate(req.scoped);
    const words = this.#words;
    const seq = ref.bucket + SEQ;
    Atomics.add(words, ref.bucket + WAITERS, 1);
    // Watches the sequence word: every move is a change. `seen` is the value the pending wait is on.
    let stopped = false;
    let seen = 0;
    const watch = (): void => {
      for (;;) {
        seen = Atomics.load(words, seq);
        const result = Atomics.waitAsync(words, seq, seen, WATCH_MS);
        if (result.async) {
          void result.value.then(woken);
          return;
        }
        // Moved between the read and the wait: a change all the same.
        onChange();
      }
    };
    const woken = (): void => {
      if (stopped) return;
      // Watching again first, so a move while onChange runs is not missed. Moved or not is
      // read from the word, not from the outcome: a wait may time out just as the word moves.
      const before = seen;
      watch();
      if (seen !== before) onChange();
    };
    watch();
    // A waiting writer makes itself known, so that new readers stop entering (no writer starvation).
    let writer = -1;
    if (req.mode === "exclusive") {
      if (!this.#latch(ref.bucket)) await this.#latchLater(ref.bucket);
      writer = this.#entry(ref, true);
      if (writer >= 0) words[writer + WRITERS]!++;
      this.#unlatch(ref.bucket);
    }
    return () => {
      stopped = true;
      Atomics.sub(words, ref.bucket + WAITERS, 1);
      if (writer >= 0) return this.#unregisterWriter(ref.bucket, writer);
    };
  }

  extend(_req: LockRequest, hold: TableHold, _ttlMs: number): Promise<boolean> {
    return Promise.resolve(hold.live);
  }

  /**
   * Releases `hold`. Without one there is nothing to do: an attempt either
   * took the key and returned its hold, or threw without taking it.
   */
  release(_req: LockRequest, hold: TableHold | undefined): Promise<void> {
    if (hold === undefined || !hold.live) return DONE;
    hold.live = false;
    if (!this.#latch(hold.bucket)) {
      return this.#latchLater(hold.bucket).then(() => this.#free(hold));
    }
    this.#free(hold);
    return DONE;
  }

  /**
   * Who holds the key, read from the table under the bucket's latch: how
   * many holders, in which mode, with which limit. The table keeps no owner
   * or token per hold.
   */
  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    const ref = this.#table.locate(scopedKey(namespace, key));
    if (!this.#latch(ref.bucket)) await this.#latchLater(ref.bucket);
    const entry = this.#entry(ref, false);
    const state = entry < 0 ? 0 : this.#words[entry + STATE]!;
    const limit = entry < 0 ? 1 : this.#table.limits[this.#table.limitIndex(entry)]!;
    this.#unlatch(ref.bucket);
    if (state === 0) return { held: false, holders: [] };
    const mode = state < 0 ? ("shared" as const) : ("exclusive" as const);
    return {
      held: true,
      limit,
      holders: Array.from({ length: Math.abs(state) }, () => ({ mode })),
    };
  }

  /** Nothing to close: the table belongs to the caller, and the core released every hold and ended every wait. */
  close(): Promise<void> {
    return DONE;
  }

  /** Under the latch, which it lets go: one attempt. */
  #try(req: LockRequest, ref: KeyRef): Promise<Attempt<TableHold>> {
    const shared = req.mode === "shared";
    const entry = this.#take(ref, shared, req.limit);
    this.#unlatch(ref.bucket);
    if (entry === MISMATCH) return Promise.reject(limitMismatch(req.limit, this.#heldLimit));
    if (entry < 0) return Promise.resolve(NOT_GRANTED);
    const hold = new TableHold(ref.bucket, entry, shared);
    return Promise.resolve({ granted: true, fencingToken: this.#table.nextToken(), hold });
  }

  /**
   * Under the latch: takes the key when its mode fits beside the current
   * holders; returns the entry, or BUSY, FULL or MISMATCH (held with
   * another limit).
   */
  #take(ref: KeyRef, shared: boolean, limit: number): number {
    const words = this.#words;
    const entry = this.#entry(ref, true);
    if (entry < 0) return FULL;
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
    }
    return entry;
  }

  /** Under the latch: the entry bound to the key; else, with `bind`, a free one bound to it now; else -1. */
  #entry(ref: KeyRef, bind: boolean): number {
    const words = this.#words;
    const end = ref.bucket + BUCKET_WORDS;
    let free = -1;
    for (let entry = ref.bucket + FIRST_ENTRY; entry < end; entry += ENTRY_WORDS) {
      if (words[entry + FP_HI] === ref.fpHi && words[entry + FP_LO] === ref.fpLo) return entry;
      if (free < 0 && words[entry + FP_HI] === 0) free = entry;
    }
    if (!bind || free < 0) return -1;
    words[free + FP_LO] = ref.fpLo;
    words[free + FP_HI] = ref.fpHi;
    words[free + STATE] = 0;
    words[free + WRITERS] = 0;
    return free;
  }

  /** Under the latch: frees the entry once nobody holds it and no writer waits for it. */
  #unbindIfIdle(entry: number): void {
    const words = this.#words;
    if (words[entry + STATE] === 0 && words[entry + WRITERS] === 0) {
      words[entry + FP_HI] = 0;
      words[entry + FP_LO] = 0;
    }
  }

  /** Under the latch, which it lets go. */
  #free(hold: TableHold): void {
    this.#words[hold.entry + STATE]! += hold.shared ? 1 : -1;
    this.#unbindIfIdle(hold.entry);
    this.#unlatch(hold.bucket);
    this.#changed(hold.bucket);
  }

  /**
   * A writer stopped waiting (granted, or gave up). When that leaves the key
   * free for readers, or its entry unbound, the bucket's waiters are told;
   * when the writer now holds the key, nothing changed for them.
   */
  async #unregisterWriter(bucket: number, entry: number): Promise<void> {
    if (!this.#latch(bucket)) await this.#latchLater(bucket);
    const words = this.#words;
    const opened = --words[entry + WRITERS]! === 0 && words[entry + STATE]! <= 0;
    this.#unbindIfIdle(entry);
    this.#unlatch(bucket);
    if (opened) this.#changed(bucket);
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
}
