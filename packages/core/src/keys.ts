import { createHash } from "node:crypto";
import { invalidArgument } from "./errors.js";

/** Longest key accepted, in UTF-8 bytes. */
const MAX_KEY_BYTES = 1024;
/** Longest namespace accepted, in UTF-8 bytes. */
export const MAX_NAMESPACE_BYTES = 256;

/**
 * Refuses anything but a non-empty string of at most `max` UTF-8 bytes. Any
 * character is allowed (backends encode keys, so none is special), but not a
 * lone surrogate: UTF-8 cannot encode one, and encoding turns every lone
 * surrogate into U+FFFD, so `"k\uD800"` and `"k\uDBFF"` would be one lock.
 *
 * @group Keys
 */
export function validateKey(key: unknown, name = "key", max = MAX_KEY_BYTES): string {
  if (typeof key !== "string")
    throw invalidArgument(name, `must be a string, got ${typeName(key)}`);
  if (key.length === 0) throw invalidArgument(name, "must not be empty");
  if (!key.isWellFormed()) {
    throw invalidArgument(
      name,
      "must be well-formed Unicode: it contains a lone surrogate, which UTF-8 cannot encode",
    );
  }
  // A UTF-16 unit is at most 3 UTF-8 bytes; only count bytes when it could matter.
  if (key.length * 3 > max && Buffer.byteLength(key, "utf8") > max) {
    throw invalidArgument(
      name,
      `must be at most ${max} UTF-8 bytes, got ${Buffer.byteLength(key)}`,
    );
  }
  return key;
}

/**
 * One string for (namespace, key) that no other pair maps to: the namespace
 * length is written first, so `("a:b", "c")` and `("a", "b:c")` stay apart.
 * Backends whose store has free-form keys (Redis, etcd) build on it.
 *
 * @group Keys
 */
export function scopedKey(namespace: string, key: string): string {
  return `${namespace.length}:${namespace}:${key}`;
}

/**
 * SHA-256 of the scoped key (as `LockRequest.digest`), for tools that name a lock outside a request.
 *
 * @group Keys
 */
export function keyDigest(namespace: string, key: string): Buffer {
  return createHash("sha256").update(scopedKey(namespace, key), "utf8").digest();
}

/** Describes a value's type for an error message without echoing the value. */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}
