import { fileURLToPath } from "node:url";
import { createLocks } from "@locks/core";
import { createRequest, keyDigest } from "@locks/core/backend";
import { runConformanceSuite } from "@locks/core/conformance";
import { startRedisCluster, waitFor } from "@locks/testkit";
import { Cluster } from "ioredis";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import { clusterBackend, clusterClient } from "./fixtures/cluster.js";
import { codeOf, freshNamespace } from "./helpers.js";

const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));
const cluster = await startRedisCluster({ masters: 3 });
afterAll(() => cluster.stop());
const nodes = cluster.startupNodes;

const env = { REDIS_CLUSTER: nodes.map((n) => `${n.host}:${n.port}`).join(",") };

runConformanceSuite({
  name: "redis cluster",
  create: () => clusterBackend(nodes),
  process: { module, env },
  ttlMs: 1000,
});

runConformanceSuite({
  name: "redis cluster fair",
  create: () => clusterBackend(nodes, true),
  process: { module, env: { ...env, REDIS_FAIR: "1" } },
  ttlMs: 1000,
});

describe("cluster specifics", () => {
  it("keeps every key of a lock in one slot, and notifies through sharded pub/sub on that slot's node", async () => {
    const ns = freshNamespace();
    const client = clusterClient(nodes);
    onTestFinished(() => client.quit().then(() => undefined));
    await waitFor(() => client.status === "ready");
    const [a, b] = [
      createLocks(clusterBackend(nodes), { namespace: ns }),
      createLocks(clusterBackend(nodes), { namespace: ns }),
    ];
    onTestFinished(() => Promise.all([a.close(), b.close()]).then(() => undefined));
    for (const key of ["{a}", "}{", "x{y}z", "plain"]) {
      const layout = keyLayout(keyDigest(ns, key));
      const slots = new Set<number>();
      for (const name of Object.values(layout))
        slots.add(Number(await client.cluster("KEYSLOT", name)));
      expect(slots.size, key).toBe(1);
      const held = await a.acquire(key, { ttlMs: 60_000 });
      const waiting = b.acquire(key, { timeoutMs: 10_000 });
      // The waiter's backend subscribed its shard channel on exactly one node: the slot's owner.
      await waitFor(async () => {
        const counts = await Promise.all(
          client
            .nodes("master")
            .map(
              async (node) =>
                (await node.pubsub("SHARDNUMSUB", layout.channel)) as [string, number],
            ),
        );
        return counts.filter(([, n]) => n === 1).length === 1;
      });
      const released = performance.now();
      await held.release();
      const next = await waiting;
      expect(performance.now() - released).toBeLessThan(400);
      expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
      await next.release();
    }
  });

  it("labels round-trip through the slot's node, and forceRelease wakes waiters through sharded pub/sub", async () => {
    const ns = freshNamespace();
    const [a, b] = [
      createLocks(clusterBackend(nodes), { namespace: ns }),
      createLocks(clusterBackend(nodes), { namespace: ns }),
    ];
    const watcher = clusterBackend(nodes);
    onTestFinished(() =>
      Promise.all([a.close(), b.close(), watcher.close()]).then(() => undefined),
    );
    const label = `"{tag}" \n 🔒`;
    const evicted = await a.acquire("k", { holder: label, ttlMs: 60_000 });
    expect((await b.inspect("k")).holders.map((h) => [h.holder, h.fencingToken])).toEqual([
      [label, evicted.fencingToken],
    ]);
    // Woken only by a notification: the watcher never polls.
    let woken = 0;
    await watcher.subscribe!(createRequest({ key: "k", namespace: ns }), () => {
      woken++;
    });
    expect(await b.forceRelease("k")).toBe(true);
    await waitFor(() => woken === 1, { timeoutMs: 5_000 });
    const next = await b.acquire("k");
    expect(next.fencingToken).toBeGreaterThan(evicted.fencingToken);
    await next.release();
    expect(await b.forceRelease("k")).toBe(false);
  });

  it("refuses a limit other than the holders', and inspect reports the key's limit (plain and fair)", async () => {
    for (const fair of [false, true]) {
      const ns = freshNamespace();
      const [a, b] = [
        createLocks(clusterBackend(nodes, fair), { namespace: ns }),
        createLocks(clusterBackend(nodes, fair), { namespace: ns }),
      ];
      onTestFinished(() => Promise.all([a.close(), b.close()]).then(() => undefined));
      const slots = await Promise.all([
        a.acquire("pool", { limit: 2 }),
        b.acquire("pool", { limit: 2 }),
      ]);
      const status = await a.inspect("pool");
      expect(status.limit, `fair: ${fair}`).toBe(2);
      expect(status.holders.map((h) => h.mode)).toEqual(["exclusive", "exclusive"]);
      const refused = await b.tryAcquire("pool", { limit: 3 }).catch((e: Error) => e);
      expect(refused).toMatchObject({
        code: "INVALID_ARGUMENT",
        message: "limit 3 differs from the limit 2 that the key's current holders use",
      });
      expect(await codeOf(b.acquire("pool", { timeoutMs: 5_000 }))).toBe("INVALID_ARGUMENT");
      await Promise.all(slots.map((slot) => slot.release()));
      expect(await a.inspect("pool")).toEqual({ key: "pool", holders: [], limit: undefined });
    }
  });

  it("a given Cluster client with ioredis' defaults is wrapped: locks and notifications work, and it is never closed", async () => {
    const given = new Cluster([...nodes]);
    given.on("error", () => undefined);
    onTestFinished(() => {
      given.disconnect();
    });
    await waitFor(() => given.status === "ready");
    const ns = freshNamespace();
    const [a, b] = [
      createLocks(redisBackend({ client: given }), { namespace: ns }),
      createLocks(redisBackend({ client: given }), { namespace: ns }),
    ];
    const held = await a.acquire("k");
    const waiting = b.acquire("k", { timeoutMs: 10_000 });
    await held.release();
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
    await next.release();
    await Promise.all([a.close(), b.close()]);
    expect(given.status).toBe("ready");
    expect(await given.ping()).toBe("PONG");
  });
});
