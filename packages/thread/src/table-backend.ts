// Atomics.waitAsync (Node 16+) is typed in ES2024, beyond the ES2023 lib the repository compiles with.
/// <reference lib="es2024.sharedmemory" />
import {
  type Attempt,
  type Backend,
  type BackendHost,
  type Capabilities,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  type Unsubscribe,
} from "@locks/core/backend";
import { HOLD_EXCLUSIVE, HOLD_SHARED } from "./records.js";
import {
  type KeySlot,
  SEQ,
  type SharedLockTable,
  STATE,
  TableView,
  WAITERS,
  WRITERS,
} from "./table.js";

/**
 * A hold of the table, the `hold` of a grant: its bucket, entry and record
 * (an entry stays bound while it is held). The record's generation changes
 * when the hold is released or evicted, so the hold can tell whether it
 * still holds the key.
 */
class TableHold {
  /** False once released (or reported lost): a second release must not free another holder's place. */
  live = true;
  /** Neighbours in the instance's list of live holds (a list, not a Set: no allocation per grant). */
  prev: TableHold | undefined;
  next: TableHold | undefined;

  constructor(
    readonly bucket: number,
    readonly entry: number,
    readonly record: number,
    /** The record's generation at the grant: the hold is held while the record keeps it. */
    readonly generation: number,
    readonly fencingToken: bigint,
    readonly shared: boolean,
  ) {}
}

/**
 * This instance's subscriptions to one key (one per waiting client with the
 * core's shared waits; one per waiter with older cores), and its
 * waiting-writer mark: set while the head of its waiters is a writer, so that
 * new readers stop entering (no writer starvation). Subscriptions carry no
 * mode, so the attempts set and clear the mark (see `#try`).
 */
class KeyWatch {
  count = 0;
  /** The key's entry and the waiting-writer record of the mark; -1 while unmarked. */
  writer = -1;
  record = -1;

  constructor(readonly ref: KeySlot) {}
}

/**
 * How long a watch of a sequence word waits before it waits again: a watch
 * left pending after its subscription ended is gone by then, even if the
 * word never moves again.
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
 * thread (Atomics.wait is not used). Each hold has a record in the table
 * (thread, mode, token, label), bound to its entry under the same latch.
 *
 * Waiting is the core's (notification plus bounded polling): `subscribe`
 * counts the waiter on its bucket and watches the bucket's sequence word with
 * Atomics.waitAsync; releases bump the word and Atomics.notify. While a
 * subscribed client's writer is refused, its key carries a waiting-writer
 * mark, so that new readers stop entering.
 */
export class TableBackend implements Backend<TableHold> {
  readonly name = "thread";
  readonly capabilities: Capabilities;
  readonly #table: TableView;
  readonly #words: Int32Array;
  /** The holders' limit `#take` found when it returned MISMATCH. */
  #heldLimit = 0;
  #host: BackendHost<TableHold> | undefined;
  /** This instance's live holds (a list through the holds), checked when another thread evicts holds. */
  #live: TableHold | undefined;
  /** The table's eviction count this instance has looked at; a watch is pending while `#watching`. */
  #evictionsSeen = 0;
  #watching = false;
  /** This instance's subscriptions, by scoped key. */
  readonly #watches = new Map<string, KeyWatch>();

  constructor(table: SharedLockTable, capabilities: Capabilities) {
    this.capabilities = capabilities;
    this.#table = new TableView(table);
    this.#words = this.#table.words;
  }

  bind(host: BackendHost<TableHold>): void {
    this.#host = host;
  }

  tryAcquire(req: LockRequest): Promise<Attempt<TableHold>> {
    const ref = this.#table.locate(req.scoped);
    if (!this.#table.latch(ref.bucket))
      return this.#table.latchLater(ref.bucket).then(() => this.#try(req, ref));
    return this.#try(req, ref);
  }
  /**
   * Calls `onChange` whenever the key's bucket changes, until unsubscribed.
   * Counted on the bucket before the core's next attempt, so a release after
   * that attempt sees a waiter and notifies (sequentially consistent atomics).
   */
  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    const ref = this.#table.locate(key.scoped);
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
    let keyWatch = this.#watches.get(key.scoped);
    if (keyWatch === undefined) {
      keyWatch = new KeyWatch(ref);
      this.#watches.set(key.scoped, keyWatch);
    }
    const counted = keyWatch;
    counted.count++;
    return Promise.resolve(() => {
      if (stopped) return;
      stopped = true;
      Atomics.sub(words, ref.bucket + WAITERS, 1);
      if (--counted.count > 0) return;
      if (this.#watches.get(key.scoped) === counted) this.#watches.delete(key.scoped);
      if (counted.record >= 0) return this.#unmarkLater(counted);
    });
  }

  /** True while the hold's record keeps its generation: false once released or force-released. */
  extend(_req: LockRequest, hold: TableHold, _ttlMs: number): Promise<boolean> {
    return Promise.resolve(
      hold.live && this.#table.records.generation(hold.record) === hold.generation,
    );
  }

  /**
   * Releases `hold`, unless it was evicted (then its record is free or
   * another grant's, and nothing of it is left to free). Without a hold there
   * is nothing to do: an attempt either took the key and returned its hold,
   * or threw without taking it.
   */
  release(_req: LockRequest, hold: TableHold | undefined): Promise<void> {
    if (hold === undefined || !hold.live) return DONE;
    hold.live = false;
    this.#unlist(hold);
    if (!this.#table.latch(hold.bucket)) {
      return this.#table.latchLater(hold.bucket).then(() => this.#free(hold));
    }
    this.#free(hold);
    return DONE;
  }

  /**
   * Who holds the key, read from its records under the bucket's latch: each
   * holder's label, mode and token, and the key's limit. No TTL: no expiry.
   */
  async inspect(key: KeyRef): Promise<KeyStatus> {
    const table = this.#table;
    const ref = table.locate(key.scoped);
    if (!table.latch(ref.bucket)) await table.latchLater(ref.bucket);
    const entry = table.entry(ref, false);
    const holders = entry < 0 ? [] : table.records.holders(entry);
    const limit = entry < 0 ? 1 : table.limits[table.limitIndex(entry)]!;
    table.unlatch(ref.bucket);
    return holders.length === 0 ? { holders } : { holders, limit };
  }

  /**
   * Frees every hold of the key, from any thread: their records are freed
   * (so each evicted hold's extend resolves false and its release frees
   * nothing), the key's waiters are woken, and every thread is told through
   * the table's eviction word, so that the evicted holds' clients report
   * them lost. Tokens come from one table-wide counter: every later grant's
   * is higher.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    const table = this.#table;
    const ref = table.locate(key.scoped);
    if (!table.latch(ref.bucket)) await table.latchLater(ref.bucket);
    const entry = table.entry(ref, false);
    const freed =
      entry < 0 ? 0 : table.evict(ref.bucket, (e, _owner, writer) => e === entry && !writer);
    table.unlatch(ref.bucket);
    if (freed === 0) return false;
    table.evicted();
    table.changed(ref.bucket);
    return true;
  }

  /** Nothing to close: the table belongs to the caller, and the core released every hold and ended every wait. */
  close(): Promise<void> {
    return DONE;
  }

  /** Under the latch, which it lets go: one attempt. */
  #try(req: LockRequest, ref: KeySlot): Promise<Attempt<TableHold>> {
    const table = this.#table;
    const shared = req.mode === "shared";
    const watch = this.#watches.get(req.scoped);
    // A reader attempts: the writer this instance's mark was for is no longer
    // at the head of its waiters (granted or gone), and must not keep it out.
    const opened = shared && watch !== undefined && watch.record >= 0 && this.#unmark(watch);
    const entry = this.#take(ref, shared, req.limit);
    let record = -1;
    let token = 0n;
    if (entry >= 0) {
      // Under the latch, so that a key's tokens increase in the order of its grants.
      token = table.nextToken();
      record = table.records.bind(entry, shared ? HOLD_SHARED : HOLD_EXCLUSIVE, token, req.holder);
      // Every record is in use: the grant is undone, and the attempt waits like any other.
      if (record < 0) this.#untake(entry, shared);
    }
    if (watch !== undefined && !shared) {
      // A writer waits in this instance: new readers stop entering until it is in (or gone).
      if (record < 0 && entry === BUSY && watch.record < 0) this.#mark(watch);
      // The writer is in: it holds the key, so lifting the mark opens nothing.
      else if (record >= 0 && watch.record >= 0) this.#unmark(watch);
    }
    table.unlatch(ref.bucket);
    if (opened) table.changed(ref.bucket);
    if (entry === MISMATCH) return Promise.reject(limitMismatch(req.limit, this.#heldLimit));
    if (record < 0) return Promise.resolve(NOT_GRANTED);
    const generation = table.records.generation(record);
    const hold = new TableHold(ref.bucket, entry, record, generation, token, shared);
    hold.next = this.#live;
    if (this.#live !== undefined) this.#live.prev = hold;
    this.#live = hold;
    if (!this.#watching) this.#watchEvictions();
    return Promise.resolve({ granted: true, fencingToken: token, hold });
  }

  /**
   * Under the latch: takes the key when its mode fits beside the current
   * holders; returns the entry, or BUSY, FULL or MISMATCH (held with
   * another limit).
   */
  #take(ref: KeySlot, shared: boolean, limit: number): number {
    const words = this.#words;
    const entry = this.#table.entry(ref, true);
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

  /** Under the latch: undoes `#take`. */
  #untake(entry: number, shared: boolean): void {
    this.#words[entry + STATE]! += shared ? 1 : -1;
    this.#table.unbindIfIdle(entry);
  }

  /** Under the latch, which it lets go. */
  #free(hold: TableHold): void {
    const table = this.#table;
    // Evicted (force-released, or its thread was taken for dead): nothing of it is left.
    const holds = table.records.generation(hold.record) === hold.generation;
    if (holds) {
      table.records.free(hold.record);
      this.#untake(hold.entry, hold.shared);
    }
    table.unlatch(hold.bucket);
    if (holds) table.changed(hold.bucket);
  }

  /** Under the latch: marks the watched key as awaited by a writer (not when no record is free). */
  #mark(watch: KeyWatch): void {
    const table = this.#table;
    const writer = table.entry(watch.ref, true);
    if (writer < 0) return;
    const record = table.records.bindWriter(writer);
    if (record < 0) {
      table.unbindIfIdle(writer);
      return;
    }
    this.#words[writer + WRITERS]!++;
    watch.writer = writer;
    watch.record = record;
  }

  /** Under the latch: lifts the mark; true when that leaves the key open to readers (tell the waiters). */
  #unmark(watch: KeyWatch): boolean {
    const words = this.#words;
    const { writer } = watch;
    this.#table.records.freeWriter(watch.record);
    watch.writer = -1;
    watch.record = -1;
    const opened = --words[writer + WRITERS]! === 0 && words[writer + STATE]! <= 0;
    this.#table.unbindIfIdle(writer);
    return opened;
  }

  /** The last subscription to a marked key ended: lifts the mark under the latch. */
  async #unmarkLater(watch: KeyWatch): Promise<void> {
    const table = this.#table;
    const { bucket } = watch.ref;
    if (!table.latch(bucket)) await table.latchLater(bucket);
    const opened = watch.record >= 0 && this.#unmark(watch);
    table.unlatch(bucket);
    if (opened) table.changed(bucket);
  }

  /**
   * Watches the table's eviction word while this instance has holds: when
   * another thread force-released holds, each of this instance's holds whose
   * record no longer has its token is reported lost to the core (its lease's
   * signal aborts). A pending Atomics.waitAsync does not keep the thread
   * alive, and there is at most one per instance, renewed every WATCH_MS.
   */
  #watchEvictions(): void {
    const header = this.#table.header;
    const index = this.#table.evictionsIndex;
    this.#watching = true;
    // Read before looking at the holds: an eviction after this read wakes the wait.
    this.#evictionsSeen = Atomics.load(header, index);
    this.#reportEvicted();
    const wait = (): void => {
      const result = Atomics.waitAsync(header, index, this.#evictionsSeen, WATCH_MS);
      if (result.async) void result.value.then(woken);
      else woken();
    };
    const woken = (): void => {
      const now = Atomics.load(header, index);
      if (now !== this.#evictionsSeen) {
        this.#evictionsSeen = now;
        this.#reportEvicted();
      }
      if (this.#live !== undefined) wait();
      else this.#watching = false;
    };
    wait();
  }

  #reportEvicted(): void {
    for (let hold = this.#live; hold !== undefined; ) {
      const next = hold.next;
      if (this.#table.records.generation(hold.record) !== hold.generation) {
        this.#unlist(hold);
        this.#host?.lost(hold, "the key was force-released");
      }
      hold = next;
    }
  }

  #unlist(hold: TableHold): void {
    if (hold.prev === undefined) {
      if (this.#live === hold) this.#live = hold.next;
    } else hold.prev.next = hold.next;
    if (hold.next !== undefined) hold.next.prev = hold.prev;
    hold.prev = undefined;
    hold.next = undefined;
  }
}
