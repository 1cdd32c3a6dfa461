import { createLocks, isLockError, type Lease, type Locks } from "@locks/core";
import { createRequest } from "@locks/core/backend";
import { type RedisServer, redisCommand, startRedisCluster, waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { keyLayout } from "../src/layout.js";
import { clusterBackend } from "./fixtures/cluster.js";
import { freshNamespace } from "./helpers.js";

// 3 masters with one replica each; a master is presumed failed after 1 s of silence.
const cluster = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1_000 });
afterAll(() => cluster.stop());
const nodes = cluster.startupNodes;

function clients(ns: string): [Locks, Locks] {
  const pair: [Locks, Locks] = [
    createLocks(clusterBackend(nodes), { namespace: ns }),
    createLocks(clusterBackend(nodes), { namespace: ns }),
  ];
  onTestFinished(() => Promise.all(pair.map((l) => l.close())).then(() => undefined));
  return pair;
}

/** The master that serves `key`'s slot in namespace `ns`. */
function masterOfLock(ns: string, key: string): Promise<RedisServer> {
  return cluster.masterOf(keyLayout(createRequest({ key, namespace: ns })).exclusive);
}

/**
 * Acquires through the failover: while the shard has no master the attempt
 * fails fast (BACKEND_UNAVAILABLE) and is tried again, in the same client.
 */
async function acquireThrough(
  locks: Locks,
  key: string,
  failures: string[],
  options: { ttlMs?: number } = {},
): Promise<Lease> {
  return waitFor(
    async () => {
      try {
        return await locks.acquire(key, { timeoutMs: 5_000, ...options });
      } catch (error) {
        if (!isLockError(error, "BACKEND_UNAVAILABLE")) throw error;
        failures.push(error.message);
        return undefined;
      }
    },
    { timeoutMs: 20_000, intervalMs: 100, message: `${key} granted after the failover` },
  );
}

/**
 * SIGKILLs `master` and resolves once another node serves `key`'s slot. When
 * the test ends the killed node is restarted (it rejoins as the replica of the
 * promoted one), so every shard has a replica again for the next test.
 */
async function failOver(master: RedisServer, ns: string, key: string): Promise<RedisServer> {
  await master.kill();
  onTestFinished(async () => {
    await master.restart();
    await cluster.waitForOk();
  });
  return waitFor(
    async () => {
      const now = await masterOfLock(ns, key);
      return now.port !== master.port ? now : undefined;
    },
    { timeoutMs: 15_000, message: "a replica promoted" },
  );
}

describe("redis cluster with replicas: a master killed mid-run", () => {
  it("its replica takes over; the same clients acquire again, a replicated lock expires there as it would have, and tokens climb past every earlier grant", async () => {
    const ns = freshNamespace();
    const [a, b] = clients(ns);
    let highest = 0n;
    for (let i = 0; i < 5; i++) {
      const lease = await a.acquire("job");
      highest = lease.fencingToken;
      await lease.release();
    }
    const held = await a.acquire("job", { ttlMs: 3_000, autoExtend: false });
    highest = held.fencingToken;
    const master = await masterOfLock(ns, "job");
    // Everything granted so far reached the replica (the case where the failover loses nothing).
    expect(await redisCommand(master.url, ["WAIT", "1", "5000"])).toBe(1);
    await failOver(master, ns, "job");

    // b asks on the promoted master: the replicated lock is still held there until its TTL ends.
    const failures: string[] = [];
    const next = await acquireThrough(b, "job", failures);
    expect(held.signal.aborted).toBe(true);
    expect(held.signal.reason).toMatchObject({ code: "LOCK_LOST" });
    expect(next.fencingToken).toBeGreaterThan(highest);
    await next.release();
    // a, which held the lock on the dead master, goes on in the same client.
    const again = await acquireThrough(a, "job", failures);
    expect(again.fencingToken).toBeGreaterThan(next.fencingToken);
    await again.release();
    await held.release();
  });

  it("documented hazard: grants the replica never received are lost with the master, and tokens go back", async () => {
    const ns = freshNamespace();
    const [a, b] = clients(ns);
    const first = await a.acquire("job");
    await first.release();
    const master = await masterOfLock(ns, "job");
    expect(await redisCommand(master.url, ["WAIT", "1", "5000"])).toBe(1);
    // Cut the replication link and keep it cut (the replica's PSYNC is refused), so what the
    // master grants from now on exists on the master alone.
    await redisCommand(master.url, ["ACL", "SETUSER", "default", "-psync", "-sync"]);
    await redisCommand(master.url, ["CLIENT", "KILL", "TYPE", "replica"]);
    const unreplicated = await a.acquire("job", { ttlMs: 60_000 });
    const info = await redisCommand(master.url, ["INFO", "replication"]);
    expect(String(info)).toMatch(/connected_slaves:0/);
    await failOver(master, ns, "job");

    // The promoted replica never saw that grant: the key is free at once, and its counter is behind.
    const failures: string[] = [];
    const second = await acquireThrough(b, "job", failures);
    expect(unreplicated.signal.aborted).toBe(false);
    // Two holders at once, and the second one's token is not above the first's: a resource
    // that refuses tokens not above the highest it has seen refuses the second holder's writes.
    expect(second.fencingToken).toBeLessThanOrEqual(unreplicated.fencingToken);
    await second.release();
    await unreplicated.release();
  });
});
