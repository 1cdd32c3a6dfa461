import type { KeyStatus } from "@locks/core/backend";
import type { KVClient, LeaseClient } from "etcd3";
import type { CallOptions } from "./calls.js";
import { isReader, type LockKeys, parseContenderValue } from "./layout.js";

/**
 * Who holds `lock`: the contenders in create-revision
 * order, judged by the same rules as the queue, each with its real mode
 * (semaphore holders are "exclusive"), and the limit they took it with. `expiresInMs` is what the
 * holder's session lease has left on the server (whole seconds), an upper
 * bound: a holder that stops extending is freed earlier by its own process.
 */
export async function inspectLock(
  kv: KVClient,
  leases: LeaseClient,
  lock: LockKeys,
  deadline: () => CallOptions,
): Promise<KeyStatus> {
  const reply = await kv.range(
    { key: lock.base, range_end: lock.baseEnd, sort_target: "Create", sort_order: "Ascend" },
    deadline(),
  );
  const remaining = new Map<string, Promise<number | undefined>>();
  const remainingOf = (id: string): Promise<number | undefined> => {
    let ttl = remaining.get(id);
    if (ttl === undefined) {
      ttl = leases.leaseTimeToLive({ ID: id }, deadline()).then(
        (r) => (Number(r.TTL) > 0 ? Number(r.TTL) * 1000 : undefined),
        () => undefined,
      );
      remaining.set(id, ttl);
    }
    return ttl;
  };
  // The oldest key always holds the lock: its limit is the one every holder took it with,
  // and a contender with another limit is only waiting to be refused.
  const oldest = reply.kvs[0];
  const keyLimit = oldest === undefined ? 1 : parseContenderValue(oldest.value).limit;
  let readers = 0;
  let writers = 0;
  const holders: Array<Promise<KeyStatus["holders"][number]>> = [];
  for (const kv of reply.kvs) {
    const shared = isReader(lock, kv.key);
    const { owner, limit } = parseContenderValue(kv.value);
    if (limit !== keyLimit) continue;
    if (shared ? writers === 0 : readers === 0 && writers < limit) {
      const fencingToken = BigInt(kv.create_revision);
      const mode = shared ? ("shared" as const) : ("exclusive" as const);
      holders.push(
        remainingOf(kv.lease).then((expiresInMs) =>
          expiresInMs === undefined
            ? { owner, mode, fencingToken }
            : { owner, mode, fencingToken, expiresInMs },
        ),
      );
    }
    if (shared) readers++;
    else writers++;
  }
  const list = await Promise.all(holders);
  if (list.length === 0) return { held: false, holders: list };
  return { held: true, limit: keyLimit, holders: list };
}
