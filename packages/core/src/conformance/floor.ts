import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import type { Lease } from "../lease.js";
import { createLocks } from "../locks.js";
import { MIN_TTL_MS } from "../options.js";
import { Harness } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

type Refusal = { code?: string; message?: string } | undefined;

async function refusal(attempt: () => Promise<unknown>): Promise<Refusal> {
  try {
    await attempt();
    return undefined;
  } catch (error) {
    return error as Refusal;
  }
}

/**
 * The `ttlMs` floor: below `max(MIN_TTL_MS, capabilities.minTtlMs)` every path
 * refuses before any I/O; at the floor itself a free key is granted, not
 * refused as arriving too late (a floor the backend cannot honour).
 */
export function floorTests(options: ConformanceOptions, capabilities: Capabilities): void {
  const floor = Math.max(MIN_TTL_MS, capabilities.minTtlMs ?? 0);
  const below = [...new Set([1, 2, 3, floor - 1])];

  describe(`ttlMs floor (${floor} ms)`, () => {
    it(`refuses ttlMs ${below.join(", ")} on acquire, tryAcquire, createLocks and extend, before any I/O`, async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      const { backend, calls: backendCalls } = await h.countedBackend();
      const lease = await locks.acquire("floor", { timeoutMs: 5_000 });
      const before = calls();
      for (const ttlMs of below) {
        const refusals: Array<[string, Refusal]> = [
          // A bound, so that a floor not enforced fails fast instead of waiting for a grant
          // that always comes back too late.
          ["acquire", await refusal(() => locks.acquire("floor-k", { ttlMs, timeoutMs: 500 }))],
          ["tryAcquire", await refusal(() => locks.tryAcquire("floor-k", { ttlMs }))],
          [
            "withLock",
            await refusal(() => locks.withLock("floor-k", () => 1, { ttlMs, timeoutMs: 500 })),
          ],
          ["createLocks", await refusal(async () => createLocks(backend, { ttlMs }))],
          ["lease.extend", await refusal(() => lease.extend(ttlMs))],
        ];
        for (const [path, error] of refusals) {
          expect(error?.code, `${path} with ttlMs ${ttlMs}`).toBe("INVALID_ARGUMENT");
          expect(error?.message, `${path} with ttlMs ${ttlMs}`).toContain("ttlMs");
        }
      }
      expect(calls(), "backend calls after the refusals").toBe(before);
      expect(backendCalls()).toBe(0);
      expect(lease.signal.aborted, "a refused extend keeps the lease").toBe(false);
      await lease.release();
    });

    it(`grants a free key with ttlMs at the floor, ${floor} ms (a floor the backend honours)`, async () => {
      const h = new Harness(options);
      const locks = await h.client();
      // A loaded machine may delay one reply past so short a lease: a backend that honours its
      // floor is granted at least once in a few tries, one that cannot never is.
      const granted: Lease[] = [];
      for (let i = 0; i < 3 && granted.length === 0; i++) {
        const lease = await locks.tryAcquire(`at-floor-${i}`, { ttlMs: floor, autoExtend: false });
        if (lease !== null) granted.push(lease);
      }
      expect(granted, `tryAcquire({ ttlMs: ${floor} }) of a free key`).toHaveLength(1);
      await granted[0]!.release();
    });
  });
}
