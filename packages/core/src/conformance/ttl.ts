import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { Harness, sleep } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Lease expiry, recovery, extension and lost-lease signalling (or, without TTL, that nothing expires). */
export function ttlTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("TTL and lost leases", () => {
    it.skipIf(!capabilities.ttl)(
      "an abandoned lease frees itself after its TTL and its holder is told (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const abandoned = await a!.acquire("expiry", { ttlMs: h.ttlMs, autoExtend: false });
        const granted = performance.now();
        const next = await b!.acquire("expiry", { timeoutMs: h.ttlMs * 10 + 5_000 });
        // Not before the TTL (minus the clock-drift allowance), yet it does come.
        expect(performance.now() - granted).toBeGreaterThanOrEqual(h.ttlMs * 0.8);
        expect(abandoned.signal.aborted).toBe(true);
        expect((abandoned.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
        if (capabilities.fencing) expect(next.fencingToken > abandoned.fencingToken).toBe(true);
        // The lost lease can neither extend nor release the new holder's lock.
        await expect(abandoned.extend()).rejects.toMatchObject({ code: "LOCK_LOST" });
        await abandoned.release();
        expect(await a!.tryAcquire("expiry")).toBeNull();
        await next.release();
      },
    );

    it.skipIf(!capabilities.ttl)(
      "the watchdog keeps a lease alive past its TTL (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const lease = await a!.acquire("watchdog", { ttlMs: h.ttlMs });
        const until = performance.now() + h.ttlMs * 3;
        while (performance.now() < until) {
          expect(await b!.tryAcquire("watchdog")).toBeNull();
          await sleep(h.ttlMs / 4);
        }
        expect(lease.signal.aborted).toBe(false);
        await lease.release();
      },
    );

    it.skipIf(!capabilities.ttl)("extend() moves the deadline (ttl)", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const lease = await a!.acquire("extend", { ttlMs: h.ttlMs, autoExtend: false });
      const before = lease.expiresAt!;
      await sleep(h.ttlMs / 2);
      await lease.extend(h.ttlMs);
      expect(lease.expiresAt!).toBeGreaterThan(before);
      await sleep(h.ttlMs * 0.7);
      // Past the original TTL: only the extension keeps it held.
      expect(await b!.tryAcquire("extend")).toBeNull();
      expect(lease.signal.aborted).toBe(false);
      await lease.release();
    });

    it.skipIf(capabilities.ttl)(
      "without server-side TTL, a lease stays held past ttlMs (negative of ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const lease = await a!.acquire("no-ttl", { ttlMs: 100, autoExtend: false });
        expect(lease.expiresAt).toBeUndefined();
        await sleep(300);
        expect(await b!.tryAcquire("no-ttl")).toBeNull();
        expect(lease.signal.aborted).toBe(false);
        await lease.extend(100);
        await lease.release();
      },
    );
  });
}
