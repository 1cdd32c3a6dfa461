import { createHash } from "node:crypto";
import { keyDigest, type LockRequest, scopedKey } from "@locks/core";

/*
 * Advisory lock ids. PostgreSQL offers one 64-bit key space (`bigint`) and
 * one of two 32-bit halves (`int, int`); the two never meet, and this package
 * only ever uses the bigint form.
 *
 * - a key:            the first 8 bytes of SHA-256(scopedKey(namespace, key)), `keyDigest` of core;
 * - interest marker:  the next 8 bytes (8 to 15) of that same digest;
 * - semaphore slot i: the first 8 bytes of SHA-256("s:" + i + ":" + scopedKey(...));
 * - semaphore turn: the first 8 bytes of SHA-256("t:" + scopedKey(...)), see TRY_SLOTS;
 * - semaphore presence: the first 8 bytes of SHA-256("p:" + scopedKey(...)), held in shared
 *   mode by every semaphore holder of the key, so that a limit-1 grant can tell it is not alone;
 * - semaphore limit markers: two 32-bit halves A and B, bytes 0-3 and 4-7 of
 *   SHA-256("m:" + scopedKey(...)), each with the limit as its low 32 bits (A << 32 | limit,
 *   B << 32 | limit), held in shared mode by every semaphore holder: pg_locks shows them as
 *   classid A or B, objid the limit, so a request finds the limit the holders use. It takes
 *   both halves to match (64 bits), so another key's lock can only pass for a marker by chance
 *   (2^-64), like any two keys. A limit above 4 294 967 295 is marked as that number.
 *
 * A scoped key always starts with a decimal digit (its namespace length), so
 * an "s:" input can never equal a scoped key: the kinds of ids can only
 * collide by chance, like any two keys (2^-64 for a pair; a collision only
 * makes two keys exclude each other, or wakes a poller for nothing).
 */

/** The ids a request works with, computed once per request. */
export interface RequestKeys {
  /** The key's own id, as a decimal string for a query parameter. */
  readonly key: string;
  /** The ids of the request's semaphore slots (limit > 1), in slot order. */
  readonly slots: readonly string[];
  /** Taken in shared mode by pollers of this key; see notify.ts. */
  readonly interest: string;
  /** Held in shared mode by every semaphore holder of this key. */
  readonly presence: string;
  /** A semaphore's turn: its waiters queue for it, and the one holding it polls the slots. */
  readonly turn: string;
  /** The two 32-bit halves (classid in pg_locks) of the key's limit markers, as oid text. */
  readonly markerHalves: readonly [string, string];
}

/** The largest limit a marker can carry (its low 32 bits); larger limits are marked as it. */
export const MAX_MARKED_LIMIT = 0xffff_ffff;

/** The two limit markers a semaphore holder of `keys` with `limit` holds. */
export function limitMarkers(keys: RequestKeys, limit: number): [string, string] {
  const low = BigInt(Math.min(limit, MAX_MARKED_LIMIT));
  const [a, b] = keys.markerHalves.map((half) =>
    BigInt.asIntN(64, (BigInt(half) << 32n) | low).toString(),
  );
  return [a as string, b as string];
}

/** Slots tried in one attempt, at most: a semaphore with a larger limit is tried by a random sample. */
export const MAX_SLOTS_PER_ATTEMPT = 256;

/** Recently used keys: hashing costs more than the rest of an uncontended attempt's local work. */
const recent = new Map<string, RequestKeys>();
const RECENT_MAX = 1_024;
/** Semaphore slot ids depend on the limit: those are not kept. */
const bySemaphoreRequest = new WeakMap<LockRequest, RequestKeys>();

/** The advisory ids of `request`; the same object is passed to tryAcquire, acquire, extend and release. */
export function requestKeys(request: LockRequest): RequestKeys {
  const own = keysOf(request.namespace, request.key);
  if (request.limit === 1) return own;
  let keys = bySemaphoreRequest.get(request);
  if (keys === undefined) {
    keys = { ...own, slots: slotIds(scopedKey(request.namespace, request.key), request.limit) };
    bySemaphoreRequest.set(request, keys);
  }
  return keys;
}

/** The ids of (namespace, key), cached. */
export function keysOf(namespace: string, key: string): RequestKeys {
  const scoped = scopedKey(namespace, key);
  let keys = recent.get(scoped);
  if (keys === undefined) {
    const digest = keyDigest(namespace, key);
    const marker = sha256(`m:${scoped}`);
    const a = marker.readUInt32BE(0);
    let b = marker.readUInt32BE(4);
    // Equal halves would make the two markers one lock: keep them apart.
    if (b === a) b ^= 1;
    keys = {
      key: toId(digest),
      slots: [],
      interest: digest.readBigInt64BE(8).toString(),
      presence: toId(sha256(`p:${scoped}`)),
      turn: toId(sha256(`t:${scoped}`)),
      markerHalves: [String(a), String(b)],
    };
    if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value as string);
    recent.set(scoped, keys);
  }
  return keys;
}

/** The ids of `slots` (slot indexes) of (namespace, key), for `inspect`. */
export function slotIdsOf(namespace: string, key: string, count: number): string[] {
  return slotIds(scopedKey(namespace, key), count, count);
}

/** The id of `key` in `namespace`, as `inspect` looks it up. */
export function advisoryId(namespace: string, key: string): string {
  return toId(keyDigest(namespace, key));
}

/** The first 8 bytes of a digest as a signed 64-bit integer (PostgreSQL's bigint). */
export function toId(digest: Buffer): string {
  return digest.readBigInt64BE(0).toString();
}

/** The two 32-bit halves pg_locks shows for a bigint advisory id: classid (high), objid (low). */
export function idHalves(id: string): { classid: string; objid: string } {
  const value = BigInt.asUintN(64, BigInt(id));
  return { classid: (value >> 32n).toString(), objid: (value & 0xffff_ffffn).toString() };
}

function slotIds(scoped: string, limit: number, enumerated = MAX_SLOTS_PER_ATTEMPT): string[] {
  if (limit <= enumerated) {
    return Array.from({ length: limit }, (_, i) => toId(sha256(`s:${i}:${scoped}`)));
  }
  // Slot indexes are drawn afresh by each attempt (see slotCandidates); none is precomputed.
  return [];
}

/**
 * The slot ids one attempt tries, starting at a random slot so that
 * contenders spread over the slots. A semaphore with more than
 * MAX_SLOTS_PER_ATTEMPT slots is tried through a random sample of that many:
 * never more than `limit` holders, and a grant whenever a sampled slot is free.
 */
export function slotCandidates(request: LockRequest): string[] {
  const { slots } = requestKeys(request);
  if (slots.length > 0) {
    const start = Math.floor(Math.random() * slots.length);
    return [...slots.slice(start), ...slots.slice(0, start)];
  }
  const scoped = scopedKey(request.namespace, request.key);
  const picked = new Set<number>();
  while (picked.size < MAX_SLOTS_PER_ATTEMPT) picked.add(Math.floor(Math.random() * request.limit));
  return [...picked].map((i) => toId(sha256(`s:${i}:${scoped}`)));
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
