import type { HolderStatus } from "@locks/core/backend";

/*
 * After the limits, the hold records, 288 bytes each: one per hold, so that
 * any thread can read who holds a key, and the thread that started a worker
 * can free what it held once it is dead.
 *   R_OWNER  0 free; else threadId + 1 of the thread that took the record (one compareExchange)
 *   R_ENTRY  index + 1 of the entry's first word it is bound to (0: taken, not bound yet);
 *            bound and unbound only under that entry's bucket latch
 *   R_KIND   HOLD_EXCLUSIVE or HOLD_SHARED
 *   R_LABEL  the holder label's length in UTF-8 bytes, -1 without one
 *   R_GEN    bumped each time the record is freed: a hold is still held while its record
 *            has the generation it was granted with (an evicted hold would be taken for
 *            held again only after 2^32 further frees of its record)
 *   bytes 24-31  the grant's fencing token (BigInt64), for inspect
 *   bytes 32-287 the label (up to 256 UTF-8 bytes, the most the core accepts)
 */
const RECORD_BYTES = 288;
const RECORD_WORDS = RECORD_BYTES / 4;
const R_OWNER = 0;
const R_ENTRY = 1;
const R_KIND = 2;
const R_LABEL = 3;
const R_GEN = 4;
const R_TOKEN = 3; // in BigInt64 units
const LABEL_OFFSET = 32;
const LABEL_BYTES = 256;
export const HOLD_EXCLUSIVE = 1;
export const HOLD_SHARED = 2;

/*
 * After the hold records, as many waiting-writer records, 2 Int32 words each:
 * W_OWNER (as R_OWNER) and W_ENTRY (as R_ENTRY). Apart from the hold
 * records, so that a waiting writer never takes the record its own grant
 * needs. A writer finding none free waits without stopping new readers.
 */
const WRITER_WORDS = 2;
const W_OWNER = 0;
const W_ENTRY = 1;

/** Bytes of `count` hold records and as many waiting-writer records. */
export function recordsBytes(count: number): number {
  return count * (RECORD_BYTES + WRITER_WORDS * 4);
}

/**
 * The records of a table, from one thread. Records are taken with one
 * compareExchange on their owner word, and bound, unbound and read under the
 * latch of the bucket of the entry they are bound to.
 */
export class HoldRecords {
  /** The hold records, as words, tokens and bytes (see RECORD_BYTES). */
  readonly #records: Int32Array;
  readonly #tokens: BigInt64Array;
  readonly #bytes: Uint8Array;
  /** The waiting-writer records (see WRITER_WORDS). */
  readonly #writers: Int32Array;
  /** Hold records, and waiting-writer records. */
  readonly count: number;
  /** Where this thread looks for a free record next (its own cursor: no shared word to contend on). */
  #cursor: number;
  #writerCursor: number;

  constructor(
    buffer: SharedArrayBuffer,
    at: number,
    count: number,
    /** This thread's mark: its threadId + 1. */
    readonly me: number,
  ) {
    this.#records = new Int32Array(buffer, at, count * RECORD_WORDS);
    this.#tokens = new BigInt64Array(buffer, at, (count * RECORD_BYTES) / 8);
    this.#bytes = new Uint8Array(buffer, at, count * RECORD_BYTES);
    this.#writers = new Int32Array(buffer, at + count * RECORD_BYTES, count * WRITER_WORDS);
    this.count = count;
    // Threads start apart in the records, so that they rarely try the same one.
    this.#cursor = (me * 61) % count;
    this.#writerCursor = this.#cursor;
  }

  /**
   * Under the entry's latch: takes a free record for this thread and binds it
   * to `entry`; -1 when every record is in use.
   */
  bind(entry: number, kind: number, token: bigint, label: string | undefined): number {
    const records = this.#records;
    const record = this.#reserve(records, RECORD_WORDS, this.#cursor);
    if (record < 0) return -1;
    this.#cursor = record + 1 === this.count ? 0 : record + 1;
    const base = record * RECORD_WORDS;
    records[base + R_KIND] = kind;
    this.#tokens[(record * RECORD_BYTES) / 8 + R_TOKEN] = token;
    if (label === undefined) records[base + R_LABEL] = -1;
    else {
      const at = record * RECORD_BYTES + LABEL_OFFSET;
      const { written } = ENCODER.encodeInto(label, this.#bytes.subarray(at, at + LABEL_BYTES));
      records[base + R_LABEL] = written;
    }
    // Plain writes: other threads read them under the latch, which the unlatch publishes.
    records[base + R_ENTRY] = entry + 1;
    return record;
  }

  /** Under the entry's latch: a waiting-writer record of this thread bound to `entry`, or -1 when none is free. */
  bindWriter(entry: number): number {
    const record = this.#reserve(this.#writers, WRITER_WORDS, this.#writerCursor);
    if (record < 0) return -1;
    this.#writerCursor = record + 1 === this.count ? 0 : record + 1;
    Atomics.store(this.#writers, record * WRITER_WORDS + W_ENTRY, entry + 1);
    return record;
  }

  /** Under the latch of the entry it is bound to: frees a waiting-writer record. */
  freeWriter(record: number): void {
    Atomics.store(this.#writers, record * WRITER_WORDS + W_ENTRY, 0);
    Atomics.store(this.#writers, record * WRITER_WORDS + W_OWNER, 0);
  }

  /** Takes the first free record from `from` on, for this thread (one compareExchange each); -1 when none. */
  #reserve(records: Int32Array, words: number, from: number): number {
    const count = this.count;
    for (let i = 0, at = from; i < count; i++, at = at + 1 === count ? 0 : at + 1) {
      if (Atomics.compareExchange(records, at * words, 0, this.me) === 0) return at;
    }
    return -1;
  }

  /**
   * Under the latch of the entry it is bound to (or unbound): frees the
   * record, which this thread then takes first again (a record in cache).
   */
  free(record: number): void {
    const base = record * RECORD_WORDS;
    const records = this.#records;
    records[base + R_GEN]!++;
    records[base + R_ENTRY] = 0;
    // Last, and atomic: only now may another thread take it.
    Atomics.store(records, base + R_OWNER, 0);
    this.#cursor = record;
  }

  /** The record's generation: it changes when the record is freed (see R_GEN). */
  generation(record: number): number {
    return Atomics.load(this.#records, record * RECORD_WORDS + R_GEN);
  }

  /**
   * Calls `each` with every hold record (`writer` false) and waiting-writer
   * record (`writer` true) that is taken: the entry it is bound to (-1: not
   * bound yet) and its owner mark.
   */
  forEach(each: (record: number, entry: number, owner: number, writer: boolean) => void): void {
    for (const [records, words, writer] of [
      [this.#records, RECORD_WORDS, false],
      [this.#writers, WRITER_WORDS, true],
    ] as const) {
      for (let record = 0; record < this.count; record++) {
        const owner = Atomics.load(records, record * words);
        if (owner !== 0) each(record, Atomics.load(records, record * words + 1) - 1, owner, writer);
      }
    }
  }

  /** Under the latch: the holds of `entry`, with their labels and tokens. */
  holders(entry: number): HolderStatus[] {
    const holders: HolderStatus[] = [];
    const records = this.#records;
    for (let record = 0; record < this.count; record++) {
      const base = record * RECORD_WORDS;
      if (records[base + R_ENTRY] !== entry + 1) continue;
      const kind = records[base + R_KIND];
      const length = records[base + R_LABEL]!;
      const at = record * RECORD_BYTES + LABEL_OFFSET;
      holders.push({
        holder: length < 0 ? undefined : DECODER.decode(this.#bytes.slice(at, at + length)),
        mode: kind === HOLD_SHARED ? "shared" : "exclusive",
        fencingToken: this.#tokens[(record * RECORD_BYTES) / 8 + R_TOKEN]!,
        // The table has no TTL: a hold lasts until released.
        expiresInMs: undefined,
      });
    }
    return holders;
  }

  /** A bound hold record's kind: HOLD_EXCLUSIVE or HOLD_SHARED. */
  kind(record: number): number {
    return this.#records[record * RECORD_WORDS + R_KIND]!;
  }
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();
