import { createLocks, isLockError, type Lease, type Locks } from "@locks/core";
import { startEtcdCluster, startProxy, type TcpProxy, waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { etcdBackend } from "../src/index.js";

// One 3-member cluster for the file; each test uses its own namespace.
const cluster = await startEtcdCluster({ members: 3 });
afterAll(() => cluster.stop());

function locksOn(hosts: string[], namespace: string): Locks {
  const locks = createLocks(etcdBackend({ hosts }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

/**
 * Acquires until granted: while the client's member is still unreachable
 * through a healed proxy (grpc-js reconnecting), attempts fail fast with
 * BACKEND_UNAVAILABLE and are tried again in the same client.
 */
function acquireThrough(locks: Locks, key: string): Promise<Lease> {
  return waitFor(
    async () => {
      try {
        return await locks.acquire(key, { ttlMs: 2_000, timeoutMs: 5_000 });
      } catch (error) {
        if (!isLockError(error, "BACKEND_UNAVAILABLE")) throw error;
        return undefined;
      }
    },
    { timeoutMs: 20_000, intervalMs: 100, message: `${key} granted again` },
  );
}

/** The two ways the link to a member dies: silence, or resets and then silence. */
const cuts: Record<string, (proxy: TcpProxy) => void> = {
  blackhole: (proxy) => proxy.blackhole(true),
  "reset, then blackhole": (proxy) => {
    proxy.blackhole(true);
    proxy.resetAll();
  },
};

describe("etcd 3-member cluster: the link between a holder and its member is cut mid-hold", () => {
  for (const [name, cut] of Object.entries(cuts)) {
    it(`${name}: the holder declares the loss itself, a client of a healthy member takes over with a higher token, the cut client recovers when the link heals`, async () => {
      const namespace = `cut-${Math.random().toString(36).slice(2)}`;
      // The holder talks to a follower through the proxy, b to the other follower; only the
      // client link is cut, the members keep their quorum.
      const leader = await cluster.leader();
      const [follower, healthy] = cluster.members.filter((m) => m !== leader);
      const proxy = await startProxy(follower!.endpoint);
      onTestFinished(() => proxy.close());
      const a = locksOn([`${proxy.host}:${proxy.port}`], namespace);
      const b = locksOn([healthy!.endpoint], namespace);

      const held = await a.acquire("k", { ttlMs: 2_000 });
      cut(proxy);
      // b waits on the healthy member: the key frees when the holder's session lease runs out there.
      const next = await b.acquire("k", { ttlMs: 2_000, timeoutMs: 15_000 });
      // By then the holder knew: its local deadline comes before the server's expiry.
      expect(held.signal.aborted).toBe(true);
      expect(held.signal.reason).toMatchObject({ code: "LOCK_LOST" });
      expect(held.held).toBe(false);
      expect(next.fencingToken).toBeGreaterThan(held.fencingToken);

      // The link heals. The proxy dropped bytes that TCP had already acknowledged, which no
      // network does (TCP would retransmit them): an HTTP/2 connection that lost frames inside
      // its stream stalls for good, so the heal also resets what the cut left open.
      proxy.blackhole(false);
      proxy.resetAll();
      // Releasing the lost lease resolves and never touches the new holder's lock.
      await held.release();
      expect(await a.tryAcquire("k").catch(() => null)).toBeNull();
      await next.release();
      // The same client, through the healed link, is granted again above every earlier token.
      const again = await acquireThrough(a, "k");
      expect(again.fencingToken).toBeGreaterThan(next.fencingToken);
      await again.release();
    });
  }
});
