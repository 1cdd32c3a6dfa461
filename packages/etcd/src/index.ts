/**
 * `@locks/etcd`: fair, fenced locks on etcd leases.
 *
 * ```ts
 * import { createLocks } from "@locks/core";
 * import { etcdBackend } from "@locks/etcd";
 *
 * const locks = createLocks(etcdBackend({ hosts: "127.0.0.1:2379" }), { namespace: "billing" });
 * ```
 *
 * @packageDocumentation
 */
import type { Backend } from "@locks/core/backend";
import { EtcdBackend } from "./backend.js";
import { type EtcdBackendOptions, resolveOptions } from "./options.js";

export type {
  EtcdBackendCommonOptions,
  EtcdBackendOptions,
  EtcdClientOptions,
  EtcdHostsOptions,
} from "./options.js";

/**
 * A lock backend on etcd (v3 API, server 3.4 or later).
 *
 * - `etcdBackend({ client })` uses an etcd3 `Etcd3` instance you made; `close()` leaves it open.
 * - `etcdBackend({ hosts })` makes its own client from etcd3's options; `close()` closes it.
 *
 * Each backend instance keeps one etcd lease per distinct TTL (in whole
 * seconds, rounded up, at least the server's minimum of 2 s by default),
 * granted on first use and kept alive until `close()`, which revokes it.
 * Contenders queue by the create revision of their keys: grants are FIFO, a
 * release wakes only the next waiter, and the fencing token is the create
 * revision of the holder's key. Keys live under `locks/`, scoped by the
 * `namespace` of `createLocks` (and the prefix of a `Namespace` client).
 *
 * Each key's value holds the acquire's owner token, limit and `holder`
 * label, so `inspect` lists the holders (never waiters) from any client.
 * `forceRelease` deletes the holders' keys in one transaction and leaves their
 * session leases (and so their other locks) alone; an evicted holder learns
 * of it from a watch on its key (set up after 250 ms of holding) or at its
 * next extension, which is refused.
 *
 * `ttlMs` is at least 250 ms (`capabilities.minTtlMs`): the core refuses a
 * shorter one with `INVALID_ARGUMENT`. A request whose `limit` differs from
 * the one the key's current holders use is refused with `INVALID_ARGUMENT`.
 *
 * Bad or unknown options throw `INVALID_ARGUMENT` at once, before any I/O.
 *
 * @group Factory
 */
export function etcdBackend(options: EtcdBackendOptions): Backend {
  return new EtcdBackend(resolveOptions(options));
}
