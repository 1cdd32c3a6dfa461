import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { monotonicNow } from "../clock.js";
import { codeOf, Harness } from "./harness.js";
import { History } from "./history.js";
import type { ConformanceOptions } from "./options.js";

/**
 * What is built from leases in the core, held to it on each backend: a
 * minimum hold (ShedLock's lockAtLeastFor), several keys all or none
 * (Redisson's MultiLock), and the synchronous `held` check.
 */
export function compositeTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("minHoldMs", () => {
    it("an early release keeps the key held until grant + minHoldMs, then frees it", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const minHoldMs = Math.max(600, capabilities.minTtlMs ?? 0);
      const grantedAt = monotonicNow();
      const ran = await a!.withLock("nightly", () => "ran", { minHoldMs });
      expect(ran).toBe("ran");
      expect(await b!.tryAcquire("nightly"), "taken right after the early release").toBeNull();
      const next = await b!.acquire("nightly", { timeoutMs: 30_000 });
      // Never before the minimum (5 ms for timer granularity), however fast the backend polls.
      expect(monotonicNow() - grantedAt).toBeGreaterThanOrEqual(minHoldMs - 5);
      await next.release();
    });

    it.skipIf(!capabilities.ttl)(
      "the store keeps an early-released key for the rest of the minimum, after the client closed too (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const minHoldMs = Math.max(5_000, (capabilities.minTtlMs ?? 0) * 2);
        const lease = await a!.acquire("kept", { minHoldMs });
        await lease.release();
        await a!.close();
        // Like a crash after the release: the store alone keeps the key until the minimum is up.
        expect(await b!.tryAcquire("kept"), "free right after the holder closed").toBeNull();
      },
    );

    it("a release after the minimum frees the key at once", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const lease = await a!.acquire("short-minimum", { minHoldMs: 1 });
      await new Promise((resolve) => setTimeout(resolve, 5));
      await lease.release();
      const next = await b!.tryAcquire("short-minimum");
      expect(next).not.toBeNull();
      await next!.release();
    });

    it("refuses a minHoldMs that is negative or not finite, before any I/O", async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      for (const minHoldMs of [
        -1,
        Number.NaN,
        Number.POSITIVE_INFINITY,
        "1" as unknown as number,
      ]) {
        expect(await codeOf(locks.acquire("k", { minHoldMs }))).toBe("INVALID_ARGUMENT");
      }
      expect(calls()).toBe(0);
    });
  });

  describe("acquireAll", () => {
    it("two instances taking overlapping sets in opposite orders never deadlock", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const history = new History();
      const loop = async (locks: typeof a, keys: string[], owner: string): Promise<void> => {
        for (let i = 0; i < 8; i++) {
          const all = await locks!.acquireAll(keys, { timeoutMs: 60_000 });
          const ends = all.leases.map((lease) => history.begin(lease, owner));
          await new Promise((resolve) => setImmediate(resolve));
          for (const end of ends) end();
          await all.release();
        }
      };
      await Promise.all([loop(a, ["x", "y", "z"], "a"), loop(b, ["z", "y"], "b")]);
      history.assertValid();
    });

    it("takes all or none: a timeout frees the keys it had taken", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const blocker = await b!.acquire("set-2");
      expect(await codeOf(a!.acquireAll(["set-1", "set-2"], { timeoutMs: 100 }))).toBe(
        "LOCK_TIMEOUT",
      );
      const first = await b!.tryAcquire("set-1");
      expect(first, "set-1 was handed back").not.toBeNull();
      await Promise.all([first!.release(), blocker.release()]);
      const all = await a!.acquireAll(["set-1", "set-2"], { timeoutMs: 30_000 });
      expect(all.leases.map((lease) => lease.key)).toEqual(["set-1", "set-2"]);
      await all.release();
      expect(all.signal.aborted).toBe(true);
    });
  });

  describe("lease.held", () => {
    it("is true while held and false after release", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      const lease = await locks.acquire("held");
      expect(lease.held).toBe(true);
      await lease.release();
      expect(lease.held).toBe(false);
    });

    it.skipIf(!capabilities.ttl)(
      "is false once the deadline passed while the event loop was blocked, and aborts the signal (ttl)",
      async () => {
        const h = new Harness(options);
        const locks = await h.client();
        // The shortest TTL the backend honours: the event loop stays blocked for that long.
        const ttlMs = Math.max(capabilities.minTtlMs ?? 0, 200);
        const lease = await locks.acquire("paused", { ttlMs });
        // A holder frozen past its TTL: no timer of the watchdog can run meanwhile.
        const until = monotonicNow() + ttlMs + 50;
        while (monotonicNow() < until) {
          // busy: the event loop is blocked
        }
        expect(lease.signal.aborted, "no timer ran yet").toBe(false);
        expect(lease.held).toBe(false);
        expect(lease.signal.aborted).toBe(true);
        expect((lease.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
      },
    );
  });
}
