import type { HolderStatus, KeyStatus } from "@locks/core/backend";
import type { IKeyValue, KVClient, LeaseClient } from "etcd3";
import type { CallOptions } from "./calls.js";
import { isReader, type LockKeys, parseContenderValue } from "./layout.js";

/**
 * How often forceRelease reads the holders again when they changed between
 * its read and its delete (a holder released, a waiter was granted).
 */
const FORCE_ATTEMPTS = 8;

/** The keys that hold `lock` now, and the limit they took it with. */
interface Holding {
  readonly holders: readonly IKeyValue[];
  readonly limit: number;
}

/**
 * Reads the contenders of `lock` in create-revision order and judges them by
 * the same rules as the queue (see queue.ts): the holders are the oldest keys,
 * never a waiter.
 */
async function readHolding(kv: KVClient, lock: LockKeys, options: CallOptions): Promise<Holding> {
  const reply = await kv.range(
    { key: lock.base, range_end: lock.baseEnd, sort_target: "Create", sort_order: "Ascend" },
    options,
  );
  // The oldest key always holds the lock: its limit is the one every holder took it with,
  // and a contender with another limit is only waiting to be refused.
  const oldest = reply.kvs[0];
  const limit = oldest === undefined ? 1 : parseContenderValue(oldest.value).limit;
  let readers = 0;
  let writers = 0;
  const holders: IKeyValue[] = [];
  for (const contender of reply.kvs) {
    const shared = isReader(lock, contender.key);
    if (parseContenderValue(contender.value).limit !== limit) continue;
    if (shared ? writers === 0 : readers === 0 && writers < limit) holders.push(contender);
    if (shared) readers++;
    else writers++;
  }
  return { holders, limit };
}

/**
 * Who holds `lock`: each holder's label, owner, real mode (semaphore holders
 * are "exclusive"), token (its key's create revision) and the limit they took
 * it with. `expiresInMs` is what the holder's session lease has left on the
 * server (whole seconds), an upper bound: a holder that stops extending is
 * freed earlier by its own process.
 */
export async function inspectLock(
  kv: KVClient,
  leases: LeaseClient,
  lock: LockKeys,
  deadline: () => CallOptions,
): Promise<KeyStatus> {
  const { holders, limit } = await readHolding(kv, lock, deadline());
  const remaining = new Map<string, Promise<number>>();
  const remainingOf = (id: string): Promise<number> => {
    let ttl = remaining.get(id);
    if (ttl === undefined) {
      // TTL -1: the lease just expired and takes the key along.
      ttl = leases
        .leaseTimeToLive({ ID: id }, deadline())
        .then((r) => Math.max(0, Number(r.TTL)) * 1000);
      remaining.set(id, ttl);
    }
    return ttl;
  };
  const list = await Promise.all(
    holders.map(async (contender): Promise<HolderStatus> => {
      const { owner, holder } = parseContenderValue(contender.value);
      return {
        holder,
        owner,
        mode: isReader(lock, contender.key) ? "shared" : "exclusive",
        fencingToken: BigInt(contender.create_revision),
        expiresInMs: await remainingOf(contender.lease),
      };
    }),
  );
  return list.length === 0 ? { holders: list } : { holders: list, limit };
}

/**
 * Deletes the keys of every holder of `lock` in one transaction, guarded by
 * each key's create revision (a key released and re-created meanwhile is a
 * waiter now, never evicted), and leaves their session leases alone: they
 * carry the holders' other locks. Waiters watch these deletions as after a
 * release, and every later grant is a key created later, so its create
 * revision (the token) is higher. True when anything was held.
 */
export async function forceReleaseLock(
  kv: KVClient,
  lock: LockKeys,
  deadline: () => CallOptions,
): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    const { holders } = await readHolding(kv, lock, deadline());
    if (holders.length === 0) return false;
    const reply = await kv.txn(
      {
        compare: holders.map((h) => ({
          key: h.key,
          target: "Create" as const,
          result: "Equal" as const,
          create_revision: h.create_revision,
        })),
        success: holders.map((h) => ({ request_delete_range: { key: h.key } })),
        failure: [],
      },
      deadline(),
    );
    if (reply.succeeded) return true;
    if (attempt === FORCE_ATTEMPTS) {
      throw new Error(`the holders of the lock changed during each of ${attempt} attempts`);
    }
  }
}
