import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { codeOf, contend, Harness, sleep } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Shared (readers/writer) and semaphore modes, or their refusal when not supported. */
export function modeTests(options: ConformanceOptions, capabilities: Capabilities): void {
  const loops = Math.ceil((options.iterations ?? 25) / 2);

  describe("shared mode", () => {
    it.skipIf(!capabilities.shared)("readers share; a writer excludes them (shared)", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const r1 = await a!.tryAcquire("rw", { mode: "shared" });
      const r2 = await b!.tryAcquire("rw", { mode: "shared" });
      expect(r1).not.toBeNull();
      expect(r2).not.toBeNull();
      expect(r2!.mode).toBe("shared");
      expect(await c!.tryAcquire("rw")).toBeNull();
      await r1!.release();
      expect(await c!.tryAcquire("rw")).toBeNull();
      await r2!.release();
      const w = await c!.tryAcquire("rw");
      expect(w).not.toBeNull();
      expect(await a!.tryAcquire("rw", { mode: "shared" })).toBeNull();
      await w!.release();
    });

    it.skipIf(!capabilities.shared)(
      "mixed readers and writers never overlap wrongly (shared)",
      async () => {
        const h = new Harness(options);
        const clients = await h.clients(3);
        const history = await contend(clients, "mixed", loops, {
          tasksPerClient: 2,
          mode: "mixed",
        });
        history.assertValid({ fencing: false });
      },
    );

    it.skipIf(!capabilities.shared || !capabilities.fair)(
      "a waiting writer is not starved by a stream of readers (shared + fair)",
      async () => {
        const h = new Harness(options);
        const [readers, writer] = await h.clients(2);
        let stop = false;
        const stream = (async () => {
          // Overlapping readers: the next one asks before the previous one leaves.
          let previous = await readers!.acquire("starve", { mode: "shared" });
          while (!stop) {
            const next = readers!.acquire("starve", { mode: "shared", timeoutMs: 10_000 });
            await sleep(20);
            await previous.release();
            previous = await next;
          }
          await previous.release();
        })();
        await sleep(50);
        const w = await writer!.acquire("starve", { timeoutMs: 5_000 }).finally(() => {
          stop = true;
        });
        await w.release();
        await stream;
      },
    );

    it.skipIf(capabilities.shared)(
      'mode "shared" is refused with INVALID_ARGUMENT before any I/O',
      async () => {
        const h = new Harness(options);
        const { locks, calls } = await h.countedClient();
        expect(await codeOf(locks.acquire("rw", { mode: "shared" }))).toBe("INVALID_ARGUMENT");
        expect(calls()).toBe(0);
      },
    );
  });

  describe("semaphore", () => {
    it.skipIf(!capabilities.semaphore)("admits at most `limit` holders (semaphore)", async () => {
      const h = new Harness(options);
      const clients = await h.clients(4);
      const held = [];
      for (const c of clients.slice(0, 3)) {
        const lease = await c.tryAcquire("pool", { limit: 3 });
        expect(lease).not.toBeNull();
        held.push(lease!);
      }
      expect(await clients[3]!.tryAcquire("pool", { limit: 3 })).toBeNull();
      await held[1]!.release();
      const fourth = await clients[3]!.acquire("pool", { limit: 3, timeoutMs: 5_000 });
      expect(await clients[1]!.tryAcquire("pool", { limit: 3 })).toBeNull();
      await Promise.all([held[0]!.release(), held[2]!.release(), fourth.release()]);
    });

    it.skipIf(!capabilities.semaphore)(
      "contention never exceeds the limit (semaphore)",
      async () => {
        const h = new Harness(options);
        const clients = await h.clients(3);
        const history = await contend(clients, "sem", loops, { tasksPerClient: 2, limit: 2 });
        history.assertValid({ fencing: false });
      },
    );

    it.skipIf(capabilities.semaphore)(
      "limit > 1 is refused with INVALID_ARGUMENT before any I/O",
      async () => {
        const h = new Harness(options);
        const { locks, calls } = await h.countedClient();
        expect(await codeOf(locks.acquire("pool", { limit: 2 }))).toBe("INVALID_ARGUMENT");
        expect(calls()).toBe(0);
      },
    );
  });
}
