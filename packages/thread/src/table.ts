import { check, defineOptions } from "@locks/core/backend";

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
}

const MAGIC = 0x4c4b5432; // "LKT2"
/** 3: the per-entry limits region after the buckets. */
const VERSION = 3;
const DEFAULT_SLOTS = 4096;
const MAX_SLOTS = 1 << 20;
/** Header: magic, version, slots (Int32 words 0-2) and the fencing counter (BigInt64 at byte 16). */
const HEADER_BYTES = 64;

/*
 * Bucket layout, 32 Int32 words (128 bytes, two cache lines):
 *   LATCH    0 while free, 1 while a thread reads or changes the bucket's entries
 *   SEQ      bumped on every change a waiter may wait for; waiters sleep on it (Atomics.waitAsync)
 *   WAITERS  acquires sleeping on this bucket, any key (releases notify only when > 0)
 *   then 7 entries of 4 words, one per key in use:
 *   FP_LO, FP_HI  the key's 64-bit fingerprint (FP_HI is never 0 in a bound entry; 0 = free entry)
 *   STATE         0 idle, n > 0 held by n exclusive holders, -n held by n shared holders
 *   WRITERS       exclusive acquires waiting for this key: while > 0 no new shared holder enters
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

function tableBytes(slots: number): number {
  return HEADER_BYTES + slots * (BUCKET_WORDS * 4 + ENTRIES * LIMIT_BYTES);
}

const parseOptions = defineOptions({ slots: check.integer(1, MAX_SLOTS) });

/** Creates a lock table in a new `SharedArrayBuffer`. */
export function createSharedLockTable(options: SharedLockTableOptions = {}): SharedLockTable {
  const { slots = DEFAULT_SLOTS } = parseOptions(options);
  const buffer = new SharedArrayBuffer(tableBytes(slots));
  const header = new Int32Array(buffer, 0, 4);
  header[1] = VERSION;
  header[2] = slots;
  // Written last: a table is recognised only once complete.
  Atomics.store(header, 0, MAGIC);
  return Object.freeze({ buffer, slots });
}

/** Checks that `table` is a table made by `createSharedLockTable` (of this layout version). */
export function isSharedLockTable(table: object): boolean {
  const { buffer, slots } = table as Partial<SharedLockTable>;
  if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES) return false;
  if (typeof slots !== "number") return false;
  const header = new Int32Array(buffer, 0, 4);
  return (
    Atomics.load(header, 0) === MAGIC &&
    header[1] === VERSION &&
    header[2] === slots &&
    buffer.byteLength === tableBytes(slots)
  );
}

/** Where a key lives in the table: its bucket and its fingerprint. */
export interface KeyRef {
  /** Index of the bucket's first word. */
  readonly bucket: number;
  readonly fpLo: number;
  readonly fpHi: number;
}

/** Typed views over a table, made once per backend instance. */
export class TableView {
  /** All bucket words; bucket `i` starts at `i * BUCKET_WORDS`. */
  readonly words: Int32Array;
  /** Each entry's limit: see `limitIndex`. */
  readonly limits: Float64Array;
  /** The table-wide fencing counter: one counter for every key and every thread. */
  readonly fence: BigInt64Array;
  readonly slots: number;

  constructor(table: SharedLockTable) {
    const wordCount = table.slots * BUCKET_WORDS;
    this.words = new Int32Array(table.buffer, HEADER_BYTES, wordCount);
    this.limits = new Float64Array(
      table.buffer,
      HEADER_BYTES + wordCount * 4,
      table.slots * ENTRIES,
    );
    this.fence = new BigInt64Array(table.buffer, 16, 1);
    this.slots = table.slots;
  }

  /** The bucket and 64-bit fingerprint of a scoped key (`scopedKey(namespace, key)`), the same in every thread. */
  locate(scoped: string): KeyRef {
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
}

/**
 * cyrb53's two 32-bit lanes (bryc, public domain) over the UTF-16 code units:
 * one pass, no allocation, no seed (every thread must agree). The bucket
 * comes from one lane, the fingerprint is both lanes.
 */
function fingerprint(text: string, slots: number): KeyRef {
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
