import { describe, expect, it, onTestFinished } from "vitest";
import type { Capabilities } from "../backend.js";
import { codeOf, Harness, sleep } from "./harness.js";
import type { ConformanceOptions } from "./options.js";
import { ResourceWatch } from "./resources.js";

/** close(): releases what it holds, rejects waiters, refuses later calls. */
export function lifecycleTests(options: ConformanceOptions, _capabilities: Capabilities): void {
  describe("close()", () => {
    it("releases every lease the client holds", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const one = await a!.acquire("close-1");
      const two = await a!.acquire("close-2");
      await a!.close();
      expect(one.signal.aborted).toBe(true);
      expect(two.signal.aborted).toBe(true);
      for (const key of ["close-1", "close-2"]) {
        const lease = await b!.tryAcquire(key);
        expect(lease, key).not.toBeNull();
        await lease!.release();
      }
    });

    it("rejects waiting acquires with LOCK_CLOSED, and they leave nothing behind", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const held = await a!.acquire("close-wait");
      const waiting = codeOf(b!.acquire("close-wait"));
      await sleep(50);
      await b!.close();
      expect(await waiting).toBe("LOCK_CLOSED");
      await held.release();
      const next = await c!.tryAcquire("close-wait");
      expect(next).not.toBeNull();
      await next!.release();
    });

    it("leaves no timer or socket behind: not the timer of an acquire granted at once, nor one the backend opened", async () => {
      const h = new Harness(options);
      // Started before the backend exists: whatever it opens must be gone after close().
      const watch = new ResourceWatch();
      onTestFinished(() => watch.stop());
      const locks = await h.client();
      // Granted at once: its 8 s timeout timer must not outlive it.
      const lease = await locks.acquire("no-leftovers", { timeoutMs: 8_000 });
      await lease.release();
      // Still held at close(): close() releases it and stops its watchdog.
      const held = await locks.acquire("no-leftovers-held", { timeoutMs: 8_000 });
      await locks.close();
      expect(held.signal.aborted).toBe(true);
      expect(await watch.leftOver(2_000), "resources left after close()").toEqual([]);
    });

    it("refuses calls after close with LOCK_CLOSED; close is idempotent", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      await locks.close();
      await locks.close();
      expect(await codeOf(locks.acquire("after"))).toBe("LOCK_CLOSED");
      expect(await codeOf(locks.tryAcquire("after"))).toBe("LOCK_CLOSED");
      expect(await codeOf(locks.withLock("after", () => 1))).toBe("LOCK_CLOSED");
    });
  });
}
