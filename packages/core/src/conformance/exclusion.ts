import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { contend, Harness } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Mutual exclusion under contention, fencing order, and owner-checked release/extend. */
export function exclusionTests(options: ConformanceOptions, capabilities: Capabilities): void {
  const loops = options.iterations ?? 25;

  describe("mutual exclusion", () => {
    it("no two holders overlap, across instances and tasks; tokens increase in grant order", async () => {
      const h = new Harness(options);
      const clients = await h.clients(3);
      const history = await contend(clients, "contended", loops, { tasksPerClient: 2 });
      expect(history.holds).toHaveLength(3 * 2 * loops);
      history.assertValid({ fencing: capabilities.fencing });
    });

    it.skipIf(!capabilities.fencing)(
      "tokens strictly increase from one grant of a key to the next (fencing)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        let last = -1n;
        for (let i = 0; i < 12; i++) {
          const lease = await (i % 2 === 0 ? a! : b!).acquire("fenced");
          expect(lease.fencingToken > last, `token ${lease.fencingToken} after ${last}`).toBe(true);
          last = lease.fencingToken;
          await lease.release();
        }
      },
    );
  });

  describe("release", () => {
    it("is idempotent and does not free the next holder's lock", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const first = await a!.acquire("idem");
      await first.release();
      await first.release();
      const second = await b!.acquire("idem", { timeoutMs: 5_000 });
      await first.release();
      expect(await c!.tryAcquire("idem")).toBeNull();
      await second.release();
    });

    it("by a non-owner leaves the holder's lock in place", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const held = await a!.acquire("owned");
      // The core's clean-up of an attempt whose outcome it does not know: by owner, no hold.
      await b!.backend.release(h.request("owned"), undefined);
      expect(await b!.tryAcquire("owned")).toBeNull();
      await held.release();
    });

    it("aborts the lease signal with LOCK_RELEASED; extend after release rejects with LOCK_LOST", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      const lease = await locks.acquire("released");
      const signal = lease.signal;
      await lease.release();
      expect(signal.aborted).toBe(true);
      expect((signal.reason as { code?: string }).code).toBe("LOCK_RELEASED");
      await expect(lease.extend()).rejects.toMatchObject({ code: "LOCK_LOST" });
    });
  });
}
