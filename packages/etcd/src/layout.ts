import type { LockMode } from "@locks/core";
import { keyDigest } from "@locks/core";

/**
 * Where a lock lives in etcd. Every contender of one lock writes one key
 * under the lock's own prefix, attached to its session lease:
 *
 * ```
 * <prefix>/<base64url sha256 of (namespace, key)>/w/<lease id hex>-<slot>   exclusive and semaphore holders/waiters
 * <prefix>/<base64url sha256 of (namespace, key)>/r/<lease id hex>-<slot>   shared (reader) holders/waiters
 * ```
 *
 * The digest is fixed-size and contains no "/", so no key can reach into
 * another lock's range: the range of key "a" never holds the contenders of
 * key "a/b", and no namespace can address another's keys. The queue order is
 * the keys' create revision, not their names.
 */
export interface LockKeys {
  /** `<prefix>/<digest>/`, the whole queue of the lock. */
  readonly base: Buffer;
  readonly baseEnd: Buffer;
  /** `<base>w/`: exclusive and semaphore contenders. */
  readonly writers: Buffer;
  readonly writersEnd: Buffer;
  /** `<base>r/`: shared contenders. */
  readonly readers: Buffer;
  readonly readersEnd: Buffer;
}

/** Builds keys for one backend instance; `clientPrefix` is the etcd3 Namespace's own prefix. */
export class Layout {
  /** Prefix added by the client's Namespace (empty for a plain `Etcd3`). */
  readonly clientPrefix: Buffer;
  readonly #root: string;

  constructor(clientPrefix: Buffer, prefix: string) {
    this.clientPrefix = clientPrefix;
    this.#root = `${prefix}/`;
  }

  /** The keys of the lock for `(namespace, key)`, as raw RPCs see them (client prefix included). */
  lock(namespace: string, key: string): LockKeys {
    const base = Buffer.concat([
      this.clientPrefix,
      Buffer.from(`${this.#root}${keyDigest(namespace, key).toString("base64url")}/`),
    ]);
    const writers = Buffer.concat([base, WRITERS]);
    const readers = Buffer.concat([base, READERS]);
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
  contender(lock: LockKeys, mode: LockMode, leaseHex: string, slot: number): Buffer {
    return Buffer.concat([
      mode === "shared" ? lock.readers : lock.writers,
      Buffer.from(`${leaseHex}-${slot.toString(36)}`),
    ]);
  }

  /** True when `key` (a raw key under `lock.base`) is a shared contender. */
  isReader(lock: LockKeys, key: Buffer): boolean {
    return (
      key.length > lock.readers.length && key.subarray(0, lock.readers.length).equals(lock.readers)
    );
  }
}

const WRITERS = Buffer.from("w/");
const READERS = Buffer.from("r/");

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

/** The value stored in a contender's key: its owner token and semaphore limit, for `inspect`. */
export function contenderValue(owner: string, limit: number): Buffer {
  return Buffer.from(`${owner} ${limit}`);
}

/** Reads a value written by {@link contenderValue}. */
export function parseContenderValue(value: Buffer): { owner: string; limit: number } {
  const [owner = "", limit = "1"] = value.toString().split(" ");
  const n = Number(limit);
  return { owner, limit: Number.isSafeInteger(n) && n > 0 ? n : 1 };
}
