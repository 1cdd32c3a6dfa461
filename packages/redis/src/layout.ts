import { keyDigest, scopedKey } from "@locks/core";

/**
 * Where one lock lives on the server. Every name shares one hash tag, so the
 * scripts work on Redis Cluster (all keys in one slot) and the channel is a
 * sharded pub/sub channel of that slot.
 *
 * The tag is the first 128 bits of the SHA-256 of `scopedKey(namespace, key)`
 * in hex: any key (braces, colons, 1024 bytes of anything) becomes 32 fixed
 * characters that cannot break the tagging, cannot reach a key of another
 * namespace, and keep names short. Two keys would share a lock only on a
 * 128-bit collision.
 */
export interface KeyLayout {
  /** String: the owner token of the exclusive holder, with a PX expiry. */
  readonly exclusive: string;
  /** Sorted set: shared holders (member: owner, score: expiry in server ms). */
  readonly readers: string;
  /** Sorted set: semaphore holders (member: owner, score: expiry in server ms). */
  readonly slots: string;
  /** Integer: the fencing counter. Never expires, so tokens never repeat while the data lives. */
  readonly fence: string;
  /** Pub/sub channel for release notifications (passed to scripts as a key so `keyPrefix` applies). */
  readonly channel: string;
  /** Sorted set, fair mode: waiting members (mode letter + owner), score: arrival sequence. */
  readonly queue: string;
  /** Sorted set, fair mode: the same members, score: when the waiter is presumed gone. */
  readonly queueExpiry: string;
  /** Integer, fair mode: arrival sequence of the queue. */
  readonly queueSequence: string;
}

/** Layouts of recently used keys: hashing costs more than a cache lookup. */
const cache = new Map<string, KeyLayout>();
const CACHE_SIZE = 1024;

/** The names of one lock's keys under `prefix` (cached for recently used keys). */
export function keyLayout(prefix: string, namespace: string, key: string): KeyLayout {
  const id = `${prefix}\u0000${scopedKey(namespace, key)}`;
  const cached = cache.get(id);
  if (cached !== undefined) return cached;
  const layout = makeLayout(prefix, namespace, key);
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value as string);
  cache.set(id, layout);
  return layout;
}

function makeLayout(prefix: string, namespace: string, key: string): KeyLayout {
  // 128 bits of SHA-256 are plenty to keep keys apart and keep every command short.
  const base = `${prefix}:{${keyDigest(namespace, key).toString("hex", 0, 16)}}:`;
  return {
    exclusive: `${base}x`,
    readers: `${base}r`,
    slots: `${base}s`,
    fence: `${base}f`,
    channel: `${base}c`,
    queue: `${base}q`,
    queueExpiry: `${base}qe`,
    queueSequence: `${base}qn`,
  };
}
