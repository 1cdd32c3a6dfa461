import { setImmediate as nextTurn } from "node:timers/promises";
import { threadId } from "node:worker_threads";
import { check, defineOptions } from "@locks/core/backend";
import { HoldRecords, recordsBytes } from "./records.js";

/**
 * A lock table in shared memory, for locks between the worker_threads of one
 * process. Create it once (usually in the main thread) and hand it to every
 * worker through `workerData` or `postMessage`: the `SharedArrayBuffer` is
 * shared, not copied. Each thread then makes `threadBackend({ table })`.
 */
export interface SharedLockTable {
  /** The shared memory. Passed to workers as is; never resized. */
  readonly buffer: SharedArrayBuffer;
  /** Number of buckets; each holds up to 7 keys that are held or waited for at the same time. */
  readonly slots: number;
  /** Number of hold records: holds (and waiting writers) the table keeps at the same time. */
  readonly holds: number;
}

/** Options of `createSharedLockTable`. */
export interface SharedLockTableOptions {
  /**
   * Number of buckets (default 4096, at most 1 048 576), 184 bytes each. A key
   * hashes to one bucket, which holds up to 7 keys in use (held, or awaited
   * by a writer) at once; an 8th key of a full bucket waits until one of them
   * is idle. Raise it when many thousands of keys are held at the same time.
   */
  slots?: number;
  /**
   * Number of hold records (default 4096, at most 1 048 576), 288 bytes each:
   * one per grant while it is held (its thread, mode, fencing token and
   * holder label). When all are in use,
   * a further grant waits until one is freed. The table also has as many
   * waiting-writer records, 8 bytes each.
   */
  holds?: number;
}

const MAGIC = 0x4c4b5432; // "LKT2"
/** 4: hold records (holder label, token, thread) after the limits. */
const VERSION = 4;
const DEFAULT_SLOTS = 4096;
const MAX_SLOTS = 1 << 20;
const DEFAULT_HOLDS = 4096;
const MAX_HOLDS = 1 << 20;
/*
 * Header, 64 bytes: Int32 words 0-3 magic, version, slots, holds; the fencing
 * counter (BigInt64 at byte 16); Int32 word 6, EVICTIONS: bumped (and
 * notified) whenever holds are force-released, so that their threads can
 * tell their clients.
 */
const HEADER_BYTES = 64;
const EVICTIONS = 6;

/*
 * Bucket layout, 32 Int32 words (128 bytes, two cache lines):
 *   LATCH    0 while free; while a thread reads or changes the bucket's entries, that
 *            thread's threadId + 1 (so a dead thread's latch can be taken back)
 *   SEQ      bumped on every change a waiter may wait for; waiters sleep on it (Atomics.waitAsync)
 *   WAITERS  acquires sleeping on this bucket, any key (releases notify only when > 0)
 *   then 7 entries of 4 words, one per key in use:
 *   FP_LO, FP_HI  the key's 64-bit fingerprint (FP_HI is never 0 in a bound entry; 0 = free entry)
 *   STATE         0 idle, n > 0 held by n exclusive holders, -n held by n shared holders
 *   WRITERS       exclusive acquires waiting for this key: while > 0 no new shared holder enters
 * STATE and WRITERS count the hold records bound to the entry (below); both
 * change with them, under the latch, so they can be counted again from them.
 */
export const BUCKET_WORDS = 32;
export const LATCH = 0;
export const SEQ = 1;
export const WAITERS = 2;
export const FIRST_ENTRY = 4;
export const ENTRY_WORDS = 4;
export const FP_LO = 0;
export const FP_HI = 1;
export const STATE = 2;
export const WRITERS = 3;
/** Entries per bucket. */
const ENTRIES = (BUCKET_WORDS - FIRST_ENTRY) / ENTRY_WORDS;

/*
 * After the buckets, one Float64 per entry (8 bytes x 7 per bucket): the limit
 * its current holders took the key with (1 for readers and plain writers).
 * Written by the first holder (STATE from 0), read under the bucket's latch.
 * A Float64, since a limit may be any safe integer.
 */
const LIMIT_BYTES = 8;

function tableBytes(slots: number, holds: number): number {
  return HEADER_BYTES + slots * (BUCKET_WORDS * 4 + ENTRIES * LIMIT_BYTES) + recordsBytes(holds);
}

const parseOptions = defineOptions({
  slots: check.integer(1, MAX_SLOTS),
  holds: check.integer(1, MAX_HOLDS),
});

/** Creates a lock table in a new `SharedArrayBuffer`. */
export function createSharedLockTable(options: SharedLockTableOptions = {}): SharedLockTable {
  const { slots = DEFAULT_SLOTS, holds = DEFAULT_HOLDS } = parseOptions(options);
  const buffer = new SharedArrayBuffer(tableBytes(slots, holds));
  const header = new Int32Array(buffer, 0, 4);
  header[1] = VERSION;
  header[2] = slots;
  header[3] = holds;
  // Written last: a table is recognised only once complete.
  Atomics.store(header, 0, MAGIC);
  return Object.freeze({ buffer, slots, holds });
}

/** Checks that `table` is a table made by `createSharedLockTable` (of this layout version). */
export function isSharedLockTable(table: object): boolean {
  const { buffer, slots, holds } = table as Partial<SharedLockTable>;
  if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES) return false;
  if (typeof slots !== "number" || typeof holds !== "number") return false;
  const header = new Int32Array(buffer, 0, 4);
  return (
    Atomics.load(header, 0) === MAGIC &&
    header[1] === VERSION &&
    header[2] === slots &&
    header[3] === holds &&
    buffer.byteLength === tableBytes(slots, holds)
  );
}

/** Where a key lives in the table: its bucket and its fingerprint. */
export interface KeySlot {
  /** Index of the bucket's first word. */
  readonly bucket: number;
  readonly fpLo: number;
  readonly fpHi: number;
}

/**
 * A table's shared memory, and the operations on it that every thread does
 * alike: the bucket latch, binding a key to an entry, counting an entry
 * again from its hold records. Made once
 * per backend instance (and per worker watched by `releaseOnExit`).
 */
export class TableView {
  /** All bucket words; bucket `i` starts at `i * BUCKET_WORDS`. */
  readonly words: Int32Array;
  /** Each entry's limit: see `limitIndex`. */
  readonly limits: Float64Array;
  /** The table-wide fencing counter: one counter for every key and every thread. */
  readonly fence: BigInt64Array;
  readonly slots: number;
  readonly header: Int32Array;
  /** Who holds what: a record per hold and per waiting writer. */
  readonly records: HoldRecords;
  /** This thread's mark in latches and records: its threadId + 1 (never 0). */
  readonly me = threadId + 1;

  constructor(table: SharedLockTable) {
    const wordCount = table.slots * BUCKET_WORDS;
    const limitsAt = HEADER_BYTES + wordCount * 4;
    const recordsAt = limitsAt + table.slots * ENTRIES * LIMIT_BYTES;
    this.header = new Int32Array(table.buffer, 0, HEADER_BYTES / 4);
    this.words = new Int32Array(table.buffer, HEADER_BYTES, wordCount);
    this.limits = new Float64Array(table.buffer, limitsAt, table.slots * ENTRIES);
    this.fence = new BigInt64Array(table.buffer, 16, 1);
    this.records = new HoldRecords(table.buffer, recordsAt, table.holds, this.me);
    this.slots = table.slots;
  }

  /** The bucket and 64-bit fingerprint of a scoped key (`scopedKey(namespace, key)`), the same in every thread. */
  locate(scoped: string): KeySlot {
    return fingerprint(scoped, this.slots);
  }

  /** Index in `limits` of the entry whose first word is `entry`. */
  limitIndex(entry: number): number {
    const offset = entry % BUCKET_WORDS;
    return ((entry - offset) / BUCKET_WORDS) * ENTRIES + (offset - FIRST_ENTRY) / ENTRY_WORDS;
  }

  /** A fencing token greater than every one handed out before, by any thread. */
  nextToken(): bigint {
    return Atomics.add(this.fence, 0, 1n) + 1n;
  }

  /** One try at the bucket's latch, spinning a little. */
  latch(bucket: number): boolean {
    const words = this.words;
    for (let i = 0; i < LATCH_SPINS; i++) {
      if (Atomics.compareExchange(words, bucket + LATCH, 0, this.me) === 0) return true;
    }
    return false;
  }

  /** The latch, retried on each next turn of the event loop (never blocking the thread). */
  async latchLater(bucket: number): Promise<void> {
    while (!this.latch(bucket)) await nextTurn();
  }

  unlatch(bucket: number): void {
    Atomics.store(this.words, bucket + LATCH, 0);
  }

  /** Wakes the bucket's waiters, in every thread, if there are any. */
  changed(bucket: number): void {
    const words = this.words;
    if (Atomics.load(words, bucket + WAITERS) === 0) return;
    Atomics.add(words, bucket + SEQ, 1);
    Atomics.notify(words, bucket + SEQ);
  }

  /** Under the latch: the entry bound to the key; else, with `bind`, a free one bound to it now; else -1. */
  entry(ref: KeySlot, bind: boolean): number {
    const words = this.words;
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
  unbindIfIdle(entry: number): void {
    const words = this.words;
    if (words[entry + STATE] === 0 && words[entry + WRITERS] === 0) {
      words[entry + FP_HI] = 0;
      words[entry + FP_LO] = 0;
    }
  }

  /**
   * Under the latch: frees every record (hold or waiting writer) bound to an
   * entry of `bucket` that `select` selects, and counts each entry's STATE
   * and WRITERS again from the records left, unbinding idle entries.
   * Returns the holds freed.
   */
  evict(
    bucket: number,
    select: (entry: number, owner: number, writer: boolean) => boolean,
  ): number {
    const words = this.words;
    const first = bucket + FIRST_ENTRY;
    // Per entry: exclusive holders, shared holders, waiting writers.
    const counts = new Int32Array(ENTRIES * 3);
    let freed = 0;
    const records = this.records;
    records.forEach((record, entry, owner, writer) => {
      if (entry < first || entry >= bucket + BUCKET_WORDS) return;
      const at = ((entry - first) / ENTRY_WORDS) * 3;
      if (!select(entry, owner, writer)) {
        counts[at + (writer ? 2 : records.kind(record) - 1)]!++;
      } else if (writer) {
        records.freeWriter(record);
      } else {
        records.free(record);
        freed++;
      }
    });
    for (let i = 0; i < ENTRIES; i++) {
      const entry = first + i * ENTRY_WORDS;
      if (words[entry + FP_HI] === 0) continue;
      const exclusive = counts[i * 3]!;
      words[entry + STATE] = exclusive > 0 ? exclusive : -counts[i * 3 + 1]!;
      words[entry + WRITERS] = counts[i * 3 + 2]!;
      this.unbindIfIdle(entry);
    }
    return freed;
  }

  /** Tells every thread that holds were evicted (see `evictions`). */
  evicted(): void {
    Atomics.add(this.header, EVICTIONS, 1);
    Atomics.notify(this.header, EVICTIONS);
  }

  /** The word `evicted()` bumps: a thread with holds watches it (Atomics.waitAsync). */
  get evictionsIndex(): number {
    return EVICTIONS;
  }
}

/** The first word of the bucket that `entry` (the index of an entry's first word) belongs to. */
export function bucketOf(entry: number): number {
  return entry - (entry % BUCKET_WORDS);
}

/**
 * Attempts at the bucket latch before yielding to the event loop. The latch
 * is held for a few dozen instructions, so it is almost always free; when its
 * holder was descheduled mid-way, spinning longer would only burn the core
 * that thread needs, so the operation retries on the next turn instead.
 */
const LATCH_SPINS = 64;

/**
 * cyrb53's two 32-bit lanes (bryc, public domain) over the UTF-16 code units:
 * one pass, no allocation, no seed (every thread must agree). The bucket
 * comes from one lane, the fingerprint is both lanes.
 */
function fingerprint(text: string, slots: number): KeySlot {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return {
    bucket: ((h2 >>> 0) % slots) * BUCKET_WORDS,
    fpLo: h1 | 0,
    // Never 0: a zero FP_HI marks a free entry.
    fpHi: h2 | 1,
  };
}
