import type { KeyRef } from "@locks/core/backend";

/**
 * Where one lock lives on the server. Every name shares one hash tag, so the
 * scripts work on Redis Cluster (all keys in one slot) and the channel is a
 * sharded pub/sub channel of that slot.
 *
 * The tag is the first 128 bits of the request's digest (SHA-256 of the
 * namespace and key, see `LockRequest.digest`) in hex: any key (braces,
 * colons, 1024 bytes of anything) becomes 32 fixed characters that cannot
 * break the tagging, cannot reach a key of another namespace, and keep names
 * short. Two keys would share a lock only on a 128-bit collision. Every name
 * starts with `locks:`, so ACLs can grant exactly `locks:*`.
 */
export interface KeyLayout {
  /** String: the owner token of the exclusive holder, with a PX expiry. */
  readonly exclusive: string;
  /** Sorted set: shared holders (member: owner, score: expiry in server ms). */
  readonly readers: string;
  /** Sorted set: semaphore holders (member: owner, score: expiry in server ms). */
  readonly slots: string;
  /**
   * Hash: each holder's token and label (field: owner, value: token, then a
   * space and the label when one was given); unlabelled exclusive holders have none.
   */
  readonly details: string;
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

/**
 * How many layouts are kept, by scoped key: a hot key's layout costs no
 * SHA-256 (about as much CPU as the rest of the client's side of a command).
 */
const CACHED = 4_096;
const cache = new Map<string, KeyLayout>();

/**
 * The names of the keys of the lock `key` (cached for the most recently used
 * keys), or of the lock whose digest is the given one.
 */
export function keyLayout(key: KeyRef | Buffer): KeyLayout {
  if (Buffer.isBuffer(key)) return layoutOf(key);
  let layout = cache.get(key.scoped);
  if (layout !== undefined) return layout;
  layout = layoutOf(key.digest);
  // Oldest inserted out first: a Map keeps insertion order.
  if (cache.size >= CACHED) cache.delete(cache.keys().next().value as string);
  cache.set(key.scoped, layout);
  return layout;
}

function layoutOf(digest: Buffer): KeyLayout {
  const base = `locks:{${digest.toString("hex", 0, 16)}}:`;
  return {
    exclusive: `${base}x`,
    readers: `${base}r`,
    slots: `${base}s`,
    details: `${base}d`,
    fence: `${base}f`,
    channel: `${base}c`,
    queue: `${base}q`,
    queueExpiry: `${base}qe`,
    queueSequence: `${base}qn`,
  };
}
