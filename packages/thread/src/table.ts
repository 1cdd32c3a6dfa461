import { invalidArgument, scopedKey } from "@locks/core";

/**
 * A lock table in shared memory, for locks between the worker_threads of one
 * process. Create it once (usually in the main thread) and hand it to every
 * worker through `workerData` or `postMessage`: the `SharedArrayBuffer` is
 * shared, not copied. Each thread then makes `threadBackend({ table })`.
 */
export interface SharedLockTable {
  /** The shared memory. Passed to workers as is; never resized. */
  readonly buffer: SharedArrayBuffer;
  /** Number of lock slots. Keys hash to slots; two keys on one slot only contend, never share a grant. */
  readonly slots: number;
}

/** Options of `createSharedLockTable`. */
export interface SharedLockTableOptions {
  /**
   * Number of lock slots (default 4096, at most 1 048 576). Each slot takes 64
   * bytes. Keys that hash to the same slot exclude each other: more slots,
   * fewer such false conflicts when many keys are held at once.
   */
  slots?: number;
}

const MAGIC = 0x4c4b5431; // "LKT1"
const VERSION = 1;
const DEFAULT_SLOTS = 4096;
const MAX_SLOTS = 1 << 20;
const HEADER_BYTES = 64;

/** Int32 words per slot: 64 bytes, one cache line, so threads on different keys do not share lines. */
export const SLOT_WORDS = 16;
/** Lock word: 0 free, n > 0 held by n exclusive holders, -n held by n shared holders. */
export const STATE = 0;
/** Bumped on every change a waiter may be waiting for; waiters sleep on it (Atomics.waitAsync). */
export const SEQ = 1;
/** Threads' acquires currently waiting on the slot (releases notify only when > 0). */
export const WAITERS = 2;
/** Exclusive acquires currently waiting: while > 0, no new shared holder is admitted (no writer starvation). */
export const WRITERS = 3;

/** Creates a lock table in a new `SharedArrayBuffer`. */
export function createSharedLockTable(options: SharedLockTableOptions = {}): SharedLockTable {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", "must be an object");
  }
  for (const name of Object.keys(options)) {
    if (name !== "slots") throw invalidArgument(`options.${name}`, "is not a known option");
  }
  const slots = options.slots ?? DEFAULT_SLOTS;
  if (!Number.isSafeInteger(slots) || slots < 1 || slots > MAX_SLOTS) {
    throw invalidArgument(
      "slots",
      `must be an integer from 1 to ${MAX_SLOTS}, got ${String(slots)}`,
    );
  }
  const buffer = new SharedArrayBuffer(HEADER_BYTES + slots * SLOT_WORDS * 4);
  const header = new Int32Array(buffer, 0, 4);
  header[1] = VERSION;
  header[2] = slots;
  // Written last: a table is recognised only once complete.
  Atomics.store(header, 0, MAGIC);
  return Object.freeze({ buffer, slots });
}

/** Typed views over a table, made once per backend instance. */
export class TableView {
  /** All slot words; slot `i` starts at `i * SLOT_WORDS`. */
  readonly words: Int32Array;
  /** The table-wide fencing counter: one counter for every key and every thread. */
  readonly fence: BigInt64Array;
  readonly slots: number;

  constructor(table: SharedLockTable) {
    this.words = new Int32Array(table.buffer, HEADER_BYTES);
    this.fence = new BigInt64Array(table.buffer, 16, 1);
    this.slots = table.slots;
  }

  /** Index of the first word of the slot `(namespace, key)` hashes to. */
  slotOf(namespace: string, key: string): number {
    return (fnv1a(scopedKey(namespace, key)) % this.slots) * SLOT_WORDS;
  }

  /** A fencing token greater than every one handed out before, by any thread. */
  nextToken(): bigint {
    return Atomics.add(this.fence, 0, 1n) + 1n;
  }
}

/** Checks that `table` is a table made by `createSharedLockTable` (of this layout version). */
export function isSharedLockTable(table: unknown): table is SharedLockTable {
  if (typeof table !== "object" || table === null) return false;
  const { buffer, slots } = table as Partial<SharedLockTable>;
  if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES) return false;
  const header = new Int32Array(buffer, 0, 4);
  return (
    Atomics.load(header, 0) === MAGIC &&
    header[1] === VERSION &&
    header[2] === slots &&
    buffer.byteLength === HEADER_BYTES + (slots as number) * SLOT_WORDS * 4
  );
}

/**
 * 32-bit FNV-1a over UTF-16 code units. Deterministic in every thread (no
 * seed), which the table needs; a collision only makes two keys contend.
 */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}
