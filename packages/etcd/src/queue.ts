import type { LockMode } from "@locks/core/backend";
import type { ICompare, IRangeRequest, IRequestOp, ITxnRequest, ITxnResponse } from "etcd3";
import { type LockKeys, parseContenderValue } from "./layout.js";

/**
 * The revision-ordered queue of etcd's concurrency recipes, as transactions.
 * Each contender's key is ordered by its create revision:
 *
 * - exclusive: holds when no key of the lock is older than its own; waits on
 *   the deletion of the key just before it (no herd);
 * - shared: holds when no exclusive key is older; waits on the newest older
 *   exclusive key (etcd's reader/writer recipe);
 * - semaphore (`limit > 1`): holds when no shared key and fewer than `limit`
 *   exclusive keys are older; waits on any deletion in the lock.
 *
 * Every position read is a transaction guarded by `create_revision(own key) ==
 * own revision`, so a contender whose key vanished (lease expired, revoked or
 * deleted by someone else) never reads itself as holder.
 */
export interface Contender {
  readonly lock: LockKeys;
  /** The contender's own key (raw, client prefix included). */
  readonly key: Buffer;
  /** Its value: owner token and limit (see `contenderValue`). */
  readonly value: Buffer;
  readonly mode: LockMode;
  readonly limit: number;
}

/** Where a contender stands. */
export type Position =
  | { readonly holder: true }
  | {
      readonly holder: false;
      /** The key to wait on (raw); undefined: wait on any deletion in the lock. */
      readonly predecessor: Buffer | undefined;
      /**
       * The next key in the way after the predecessor, watched too so that the
       * waiter learns when the predecessor becomes the last one; undefined when
       * the predecessor is the only key in the way: its deletion hands the
       * lock over, with no read.
       */
      readonly before: Buffer | undefined;
    };

const HOLDER: Position = { holder: true };

function put(c: Contender, lease: string): IRequestOp {
  return { request_put: { key: c.key, value: c.value, lease } };
}

function get(key: Buffer): IRequestOp {
  return { request_range: { key } };
}

function absent(key: Buffer, rangeEnd?: Buffer): ICompare {
  return rangeEnd === undefined
    ? { key, target: "Create", result: "Equal", create_revision: 0 }
    : { key, range_end: rangeEnd, target: "Create", result: "Equal", create_revision: 0 };
}

/**
 * One non-blocking take: the key is written only when the contender would
 * hold at once (exclusive, shared), so a failed attempt leaves nothing behind.
 * A semaphore cannot compare a count, so its key is written with the position
 * read in the same transaction, and deleted again by the caller when it does
 * not hold. When the own key already exists (etcd3 retried a request that had
 * in fact succeeded) the failure branch returns it.
 */
export function takeRequest(c: Contender, lease: string): ITxnRequest {
  if (c.limit > 1) return enqueueRequest(c, lease);
  const { lock } = c;
  // Exclusive: "no key in the lock" already fails when our own key exists. Shared: our own
  // key is not among the writers, so it needs its own guard (a second put would keep the
  // create revision but answer with a newer one).
  const compare =
    c.mode === "shared"
      ? [absent(c.key), absent(lock.writers, lock.writersEnd)]
      : [absent(lock.base, lock.baseEnd)];
  return { compare, success: [put(c, lease)], failure: [get(c.key), oldest(lock)] };
}

/**
 * A read-only transaction that tells whether a take would fail (a key it
 * would have to wait for exists) and with which limit the lock is held,
 * without a write: a write transaction goes through consensus even when its
 * condition fails. Not for semaphores, whose take reads a count.
 */
export function probeRequest(lock: LockKeys, mode: LockMode): ITxnRequest {
  const blocking: IRangeRequest =
    mode === "shared"
      ? { key: lock.writers, range_end: lock.writersEnd, keys_only: true, limit: 1 }
      : { key: lock.base, range_end: lock.baseEnd, keys_only: true, limit: 1 };
  return { compare: [], success: [{ request_range: blocking }, oldest(lock)], failure: [] };
}

/** Joins the queue: writes the key and reads the position in the same transaction. */
export function enqueueRequest(c: Contender, lease: string): ITxnRequest {
  return {
    compare: [absent(c.key)],
    success: [put(c, lease), ...positionReads(c, undefined)],
    failure: [get(c.key)],
  };
}

/**
 * Reads the position of a contender whose key was created at `revision`, if
 * it still exists. A serializable read is answered by the member the client
 * talks to, without a round of consensus, and may be stale; that is safe
 * here: keys older than ours can only disappear over time (no key created
 * later has a lower create revision), so a stale read never shows fewer older
 * keys than there are. It can miss our own key on a lagging member, so a
 * failed serializable check is confirmed with a linearizable one.
 */
export function checkRequest(c: Contender, revision: bigint, serializable = false): ITxnRequest {
  return {
    compare: [
      { key: c.key, target: "Create", result: "Equal", create_revision: revision.toString() },
    ],
    success: positionReads(c, revision, serializable),
    failure: [],
  };
}

/**
 * Moves a contender's key, created at `revision`, to `lease`: a put keeps the
 * create revision, so the queue position and the token stay. Fails when the
 * key is gone or was re-created since.
 */
export function moveRequest(c: Contender, revision: bigint, lease: string): ITxnRequest {
  return {
    compare: [{ key: c.key, target: "Create", result: "Equal", create_revision: `${revision}` }],
    success: [put(c, lease)],
    failure: [],
  };
}

/**
 * The reads that decide a position. With `revision` undefined they run in the
 * transaction that wrote the key, where every visible key is older than it.
 */
function positionReads(
  c: Contender,
  revision: bigint | undefined,
  serializable = false,
): IRequestOp[] {
  const { lock } = c;
  const older: Partial<IRangeRequest> =
    revision === undefined ? {} : { max_create_revision: (revision - 1n).toString() };
  const range = (key: Buffer, range_end: Buffer, limit: number): IRequestOp => ({
    request_range: {
      key,
      range_end,
      keys_only: true,
      sort_target: "Create",
      sort_order: "Descend",
      limit,
      ...older,
      ...(serializable ? { serializable } : {}),
    },
  });
  if (c.limit > 1) {
    // Own key is among the writers when read in the writing transaction.
    const own = revision === undefined ? 1 : 0;
    return [
      range(lock.readers, lock.readersEnd, 1),
      range(lock.writers, lock.writersEnd, c.limit + own),
      oldest(lock, serializable),
    ];
  }
  // The two newest keys in the way (see `Position.before`); the own key comes first when read
  // in the writing transaction.
  if (c.mode === "shared")
    return [range(lock.writers, lock.writersEnd, 2), oldest(lock, serializable)];
  return [
    range(lock.base, lock.baseEnd, revision === undefined ? 3 : 2),
    oldest(lock, serializable),
  ];
}

/**
 * The oldest key of the lock, with its value. The oldest key of a lock
 * always holds it, so its value tells the limit the holders use.
 */
function oldest(lock: LockKeys, serializable = false): IRequestOp {
  return {
    request_range: {
      key: lock.base,
      range_end: lock.baseEnd,
      sort_target: "Create",
      sort_order: "Ascend",
      limit: 1,
      ...(serializable ? { serializable } : {}),
    },
  };
}

/** Where the {@link oldest} read is in a reply whose position reads start at `from`. */
export function oldestAt(c: Contender, from: number): number {
  return from + (c.limit > 1 ? 2 : 1);
}

/**
 * The limit the holders of the lock use, read by {@link oldest} at `index`,
 * when it differs from the contender's own; undefined when it is the same,
 * when the lock is free, or when the contender's own key is the oldest.
 */
export function limitConflict(
  c: { readonly key?: Buffer; readonly limit: number },
  reply: ITxnResponse,
  index: number,
): number | undefined {
  const holder = reply.responses[index]?.response_range?.kvs[0];
  if (holder === undefined || (c.key !== undefined && holder.key.equals(c.key))) return undefined;
  const { limit } = parseContenderValue(holder.value);
  return limit === c.limit ? undefined : limit;
}

/** Decides the position from the responses of {@link positionReads} (starting at `from`). */
export function positionOf(c: Contender, reply: ITxnResponse, from: number): Position {
  const keys = (i: number): Buffer[] =>
    (reply.responses[from + i]?.response_range?.kvs ?? [])
      .map((kv) => kv.key)
      .filter((key) => !key.equals(c.key));
  if (c.limit > 1) {
    const readers = keys(0);
    const writers = keys(1);
    return readers.length === 0 && writers.length < c.limit
      ? HOLDER
      : { holder: false, predecessor: undefined, before: undefined };
  }
  const [predecessor, before] = keys(0);
  return predecessor === undefined ? HOLDER : { holder: false, predecessor, before };
}

/**
 * The own key as a failure branch read it: undefined when it does not exist;
 * `ours` when it holds this attempt's value (etcd3 repeated a request that had
 * in fact succeeded), not when it is a leftover under the same name.
 */
export function existingKey(
  reply: ITxnResponse,
  value: Buffer,
): { readonly revision: bigint; readonly ours: boolean } | undefined {
  const kv = reply.responses[0]?.response_range?.kvs[0];
  if (kv === undefined) return undefined;
  return { revision: BigInt(kv.create_revision), ours: kv.value.equals(value) };
}
