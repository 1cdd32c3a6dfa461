import { createLocks, type Lease, type Locks } from "@locks/core";
import { keyDigest } from "@locks/core/backend";
import { waitFor } from "@locks/testkit";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import { freshNamespace, rawClient } from "./helpers.js";

const url = inject("redisUrl");

/**
 * The queue-entry TTL (the options accept 30 ms and up). A waiter refreshes its
 * entry every third of it; an entry not refreshed expires and its waiter loses its place.
 */
const WAITER_TTL_MS = 300;
/** Each hold lasts ten queue-entry TTLs: a waiter's entry must be refreshed many times to keep its place. */
const HOLD_MS = WAITER_TTL_MS * 10;

function hold(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("fair mode with holds much longer than the queue-entry TTL", () => {
  it(`four waiters on four clients are served in arrival order (waiterTtlMs ${WAITER_TTL_MS}, holds of ${HOLD_MS} ms)`, async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const layout = keyLayout(keyDigest(ns, "k"));
    // One backend (own connections) per client: the holder and each waiter.
    const clients: Locks[] = [];
    for (let i = 0; i < 5; i++) {
      const locks = createLocks(redisBackend({ url, fair: true, waiterTtlMs: WAITER_TTL_MS }), {
        namespace: ns,
      });
      onTestFinished(() => locks.close());
      clients.push(locks);
    }
    // Warm up (connection, scripts) on another key, so no waiter is slowed by its first command.
    for (const locks of clients) await (await locks.acquire("warm-up")).release();

    const [holderClient, ...waiterClients] = clients as [Locks, ...Locks[]];
    const holder = await holderClient.acquire("k");
    const granted: string[] = [];
    const tokens: bigint[] = [holder.fencingToken];
    const arrival: string[] = [];
    const served: Promise<void>[] = [];
    for (const [i, locks] of waiterClients.entries()) {
      const name = `W${i + 1}`;
      const last = i === waiterClients.length - 1;
      served.push(
        locks.acquire("k", { timeoutMs: 20_000 }).then(async (lease: Lease) => {
          granted.push(name);
          tokens.push(lease.fencingToken);
          if (!last) await hold(HOLD_MS);
          await lease.release();
        }),
      );
      // The next waiter starts only once this one is in the server's queue.
      const member = await waitFor(
        async () => (await raw.zrange(layout.queue, 0, -1)).find((m) => !arrival.includes(m)),
        { intervalMs: 5 },
      );
      arrival.push(member);
    }
    expect(await raw.zrange(layout.queue, 0, -1)).toEqual(arrival);

    await hold(HOLD_MS);
    await holder.release();
    await Promise.all(served);

    expect(granted).toEqual(["W1", "W2", "W3", "W4"]);
    // One grant each: no grant was lost and retried.
    expect(tokens).toEqual(tokens.map((_, i) => holder.fencingToken + BigInt(i)));
    expect(await raw.exists(layout.queue, layout.queueExpiry)).toBe(0);
  }, 30_000);
});
