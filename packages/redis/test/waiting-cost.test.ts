import { createLocks, type Locks } from "@locks/core";
import { keyDigest } from "@locks/core/backend";
import { countOver, monitorRedis, type RedisMonitor, startRedis, waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import { freshNamespace, rawClient } from "./helpers.js";

/*
 * What waiting costs the server, counted in client requests (MONITOR), not
 * time: waiters of one key in one client share one subscription and one
 * attempt per change, so while nothing happens they cost next to nothing, and
 * a handoff costs the release and an attempt or two.
 */

// Its own server: the monitor counts every client's requests.
const server = await startRedis();
afterAll(() => server.stop());

const WAITERS = 40;
/** The idle window: a few safety polls, heartbeats and (fair) queue refreshes fall in it. */
const IDLE_MS = 4_000;

function client(ns: string, fair: boolean): Locks {
  const locks = createLocks(redisBackend({ url: server.url, fair }), { namespace: ns });
  onTestFinished(() => locks.close());
  return locks;
}

/** The monitor's count once it has seen every request sent before this call. */
async function settledCount(monitor: RedisMonitor): Promise<number> {
  const admin = rawClient(server.url);
  const mark = monitor.requests;
  await admin.ping();
  await waitFor(() => monitor.requests > mark, { message: "the monitor saw the PING" });
  return monitor.requests - 1;
}

describe("waiting cost", () => {
  for (const fair of [false, true]) {
    it(`${WAITERS} waiters in 2 clients cost <= 0.1 requests per waiter per second while the key is held, and <= 4 per handoff${fair ? " (fair)" : ""}`, async () => {
      const ns = freshNamespace();
      const admin = rawClient(server.url);
      const holders = client(ns, fair);
      const waiting = [client(ns, fair), client(ns, fair)];
      const held = await holders.acquire("k", { ttlMs: 30_000 });
      const evalshaBefore = await evalshaCalls();
      let granted = 0;
      const done = Array.from({ length: WAITERS }, (_, i) =>
        (waiting[i % 2] as Locks)
          .acquire("k", { timeoutMs: 60_000, ttlMs: 30_000 })
          .then((lease) => {
            granted++;
            return lease.release();
          }),
      );
      // Every waiter attempted once (fair: and joined the queue), and each client's wait for
      // the key subscribed and attempted for its first waiter: all of them sleep now.
      const channel = keyLayout(keyDigest(ns, "k")).channel;
      const settled = WAITERS * (fair ? 2 : 1) + 2;
      await waitFor(
        async () =>
          (await evalshaCalls()) - evalshaBefore >= settled &&
          (await admin.pubsub("NUMSUB", channel))[1] === 2,
        { message: "every waiter waits", timeoutMs: 20_000 },
      );
      const monitor = await monitorRedis(server);
      onTestFinished(() => monitor.close());

      const { requests, seconds } = await countOver(() => settledCount(monitor), IDLE_MS);
      expect(granted).toBe(0);
      // Per waiter per second: a poll of each waiter once a second would be 1.
      expect(requests / WAITERS / seconds, `${requests} requests`).toBeLessThanOrEqual(0.1);

      const handoffStart = await settledCount(monitor);
      await held.release();
      await Promise.all(done);
      const handoffs = (await settledCount(monitor)) - handoffStart;
      expect(granted).toBe(WAITERS);
      // Each: the release (which wakes the waiting clients) and their attempts.
      expect(handoffs / WAITERS).toBeLessThanOrEqual(4);

      async function evalshaCalls(): Promise<number> {
        const info = await admin.info("commandstats");
        return Number(/^cmdstat_evalsha:calls=(\d+)/m.exec(info)?.[1] ?? 0);
      }
    });
  }
});
