import type { LockMode } from "@locks/core/backend";

/**
 * Where a lock lives in etcd. Every contender of one lock writes one key
 * under the lock's own prefix, attached to its session lease:
 *
 * ```
 * locks/<base64url sha256 of (namespace, key)>/w/<lease id hex>-<slot>   exclusive and semaphore holders/waiters
 * locks/<base64url sha256 of (namespace, key)>/r/<lease id hex>-<slot>   shared (reader) holders/waiters
 * ```
 *
 * The digest (`LockRequest.digest`) is fixed-size and contains no "/", so no
 * key can reach into another lock's range: the range of key "a" never holds
 * the contenders of key "a/b", and no namespace can address another's keys.
 * The core's `namespace` is the only scope; a client given as an etcd3
 * `Namespace` adds its own prefix in front. The queue order is the keys'
 * create revision, not their names.
 */
export interface LockKeys {
  /** `locks/<digest>/`, the whole queue of the lock (client prefix included). */
  readonly base: Buffer;
  readonly baseEnd: Buffer;
  /** `<base>w/`: exclusive and semaphore contenders. */
  readonly writers: Buffer;
  readonly writersEnd: Buffer;
  /** `<base>r/`: shared contenders. */
  readonly readers: Buffer;
  readonly readersEnd: Buffer;
}

/** The keys of the lock whose `(namespace, key)` digest is `digest`; `clientPrefix` is the etcd3 Namespace's own prefix. */
export function lockKeys(clientPrefix: Buffer, digest: Buffer): LockKeys {
  const base = Buffer.concat([clientPrefix, Buffer.from(`locks/${digest.toString("base64url")}/`)]);
  const writers = Buffer.concat([base, Buffer.from("w/")]);
  const readers = Buffer.concat([base, Buffer.from("r/")]);
  return {
    base,
    baseEnd: prefixEnd(base),
    writers,
    writersEnd: prefixEnd(writers),
    readers,
    readersEnd: prefixEnd(readers),
  };
}

/** The key of one contender: unique among the live keys, by lease and slot. */
export function contenderKey(
  lock: LockKeys,
  mode: LockMode,
  leaseHex: string,
  slot: number,
): Buffer {
  return Buffer.concat([
    mode === "shared" ? lock.readers : lock.writers,
    Buffer.from(`${leaseHex}-${slot.toString(36)}`),
  ]);
}

/** True when `key` (a raw key under `lock.base`) is a shared contender. */
export function isReader(lock: LockKeys, key: Buffer): boolean {
  return (
    key.length > lock.readers.length && key.subarray(0, lock.readers.length).equals(lock.readers)
  );
}

/** The end of the range of keys that start with `prefix` (etcd's "prefix + 1"). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  // All 0xff: the range runs to the end of the key space.
  return Buffer.from([0]);
}

/**
 * The value stored in a contender's key, for `inspect` from any client: its
 * owner token, semaphore limit and holder label, space-separated. The label
 * comes last and runs to the end of the value, so it may hold any text
 * (spaces, newlines); a value without one (written before labels existed,
 * or with none given) reads as unlabelled.
 */
export function contenderValue(owner: string, limit: number, holder: string | undefined): Buffer {
  return Buffer.from(holder === undefined ? `${owner} ${limit}` : `${owner} ${limit} ${holder}`);
}

/** Reads a value written by {@link contenderValue}. */
export function parseContenderValue(value: Buffer): {
  owner: string;
  limit: number;
  holder: string | undefined;
} {
  const text = value.toString();
  const [owner = "", limit = "1"] = text.split(" ", 2);
  const labelAt = owner.length + limit.length + 2;
  const n = Number(limit);
  return {
    owner,
    limit: Number.isSafeInteger(n) && n > 0 ? n : 1,
    holder: text.length > labelAt ? text.slice(labelAt) : undefined,
  };
}
