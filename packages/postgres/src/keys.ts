import { createHash } from "node:crypto";
import type { KeyRef, LockRequest } from "@locks/core/backend";

/*
 * Advisory lock ids. PostgreSQL offers one 64-bit key space (`bigint`) and
 * one of two 32-bit halves (`int, int`); the two never meet, and this package
 * only ever uses the bigint form.
 *
 * - a key:            the first 8 bytes of `request.digest` (SHA-256 of the scoped key);
 * - interest marker:  the next 8 bytes (8 to 15) of that same digest;
 * - semaphore presence: bytes 16 to 23 of that digest, held in shared mode by every
 *   semaphore holder of the key, so that a limit-1 grant can tell it is not alone;
 * - semaphore limit markers: two 32-bit halves A and B, bytes 24-27 and 28-31 of that
 *   digest, each with the limit as its low 32 bits (A << 32 | limit,
 *   B << 32 | limit), held in shared mode by every semaphore holder: pg_locks shows them as
 *   classid A or B, objid the limit, so a request finds the limit the holders use. It takes
 *   both halves to match (64 bits), so another key's lock can only pass for a marker by chance
 *   (2^-64), like any two keys. A limit above 4 294 967 295 is marked as that number;
 * - semaphore slot i: the first 8 bytes of SHA-256("s:" + i + ":" + scoped key);
 * - semaphore turn: the first 8 bytes of SHA-256("t:" + scoped key), see TRY_SLOTS;
 * - token markers, in the (int, int) space, which nothing else here uses: (each half of
 *   the key's id, the token's low 32 bits), held in shared mode by each grant of the key,
 *   see sql.statements.
 *
 * So a limit-1 request needs no hash but the core's digest: hashing costs more
 * than the rest of an uncontended attempt's local work. (0.1 hashed presence
 * and markers on their own: a 0.1 client and a later one see each other's
 * keys and slots, not each other's semaphore markers.)
 *
 * A scoped key always starts with a decimal digit (its namespace length), so
 * an "s:" input can never equal a scoped key: the kinds of ids can only
 * collide by chance, like any two keys (2^-64 for a pair; a collision only
 * makes two keys exclude each other, or wakes a poller for nothing).
 */

/** The ids of a key, as decimal strings for query parameters. */
export interface Ids {
  /** The key's own id. */
  readonly key: string;
  /** Taken in shared mode by the pollers of this key; see `subscribe` in backend.ts. */
  readonly interest: string;
  /** Held in shared mode by every semaphore holder of this key. */
  readonly presence: string;
  /** The two 32-bit halves (classid in pg_locks) of the key's limit markers, as oid text. */
  readonly markerHalves: readonly [string, string];
}

/** The largest limit a marker can carry (its low 32 bits); larger limits are marked as it. */
const MAX_MARKED_LIMIT = 0xffff_ffff;

/** Slots tried in one attempt, at most: a semaphore with a larger limit is tried by a random sample. */
const MAX_SLOTS_PER_ATTEMPT = 256;

/** Per request: a waiting request's attempts, and its release, need the same ids again. */
const computed = new WeakMap<KeyRef, Ids>();

/** The advisory ids of `request`'s key. */
export function idsOf(request: KeyRef): Ids {
  let ids = computed.get(request);
  if (ids === undefined) {
    const { digest } = request;
    const a = digest.readUInt32BE(24);
    let b = digest.readUInt32BE(28);
    // Equal halves would make the two markers one lock: keep them apart.
    if (b === a) b ^= 1;
    ids = {
      key: digest.readBigInt64BE(0).toString(),
      interest: digest.readBigInt64BE(8).toString(),
      presence: digest.readBigInt64BE(16).toString(),
      markerHalves: [String(a), String(b)],
    };
    computed.set(request, ids);
  }
  return ids;
}

/**
 * The two limit markers a semaphore holder of `ids` with `limit` holds, and
 * the limit as they mark it (oid text).
 */
export function limitMarkers(ids: Ids, limit: number): [a: string, b: string, marked: string] {
  const low = BigInt(Math.min(limit, MAX_MARKED_LIMIT));
  const [a, b] = ids.markerHalves.map((half) =>
    BigInt.asIntN(64, (BigInt(half) << 32n) | low).toString(),
  );
  return [a as string, b as string, low.toString()];
}

/** A semaphore's turn: its waiters queue for it, and the one holding it takes the next free slot. */
export function turnId(request: LockRequest): string {
  return toId(sha256(`t:${request.scoped}`));
}

/** The ids of the slots `indexes` of the semaphore `scoped`. */
export function slotIds(scoped: string, indexes: Iterable<number>): string[] {
  return Array.from(indexes, (i) => toId(sha256(`s:${i}:${scoped}`)));
}

/**
 * The slot ids one attempt tries, starting at a random slot so that
 * contenders spread over the slots. A semaphore with more than
 * MAX_SLOTS_PER_ATTEMPT slots is tried through a random sample of that many:
 * never more than `limit` holders, and a grant whenever a sampled slot is free.
 */
export function slotCandidates(request: LockRequest): string[] {
  const { limit } = request;
  if (limit <= MAX_SLOTS_PER_ATTEMPT) {
    const start = Math.floor(Math.random() * limit);
    return slotIds(
      request.scoped,
      Array.from({ length: limit }, (_, i) => (start + i) % limit),
    );
  }
  const picked = new Set<number>();
  while (picked.size < MAX_SLOTS_PER_ATTEMPT) picked.add(Math.floor(Math.random() * limit));
  return slotIds(request.scoped, picked);
}

/** The first 8 bytes of a digest as a signed 64-bit integer (PostgreSQL's bigint). */
function toId(digest: Buffer): string {
  return digest.readBigInt64BE(0).toString();
}

/** The two 32-bit halves pg_locks shows for a bigint advisory id: classid (high), objid (low). */
export function idHalves(id: string): { classid: string; objid: string } {
  const value = BigInt.asUintN(64, BigInt(id));
  return { classid: (value >> 32n).toString(), objid: (value & 0xffff_ffffn).toString() };
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
