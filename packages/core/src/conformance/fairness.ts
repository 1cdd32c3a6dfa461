import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { Harness, sleep, warmUp } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** FIFO grant order (fair) and wake-up by notification rather than polling (notify). */
export function fairnessTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("fairness and notification", () => {
    it.skipIf(!capabilities.fair)(
      "grants waiters in the order they started waiting (fair)",
      async () => {
        const h = new Harness(options);
        const clients = await h.clients(3);
        await warmUp(clients);
        const holder = await clients[0]!.acquire("fifo");
        const order: number[] = [];
        const waiters: Promise<void>[] = [];
        for (let i = 0; i < 6; i++) {
          const locks = clients[i % clients.length]!;
          waiters.push(
            locks.acquire("fifo", { timeoutMs: 20_000 }).then(async (lease) => {
              order.push(i);
              await sleep(5);
              await lease.release();
            }),
          );
          // Give each waiter time to join the queue before the next one starts.
          await sleep(60);
        }
        await holder.release();
        await Promise.all(waiters);
        expect(order).toEqual([0, 1, 2, 3, 4, 5]);
      },
    );

    it.skipIf(!capabilities.fair || !capabilities.semaphore)(
      "grants a freed semaphore slot to the waiter that waited longest (fair + semaphore)",
      async () => {
        const h = new Harness(options);
        const [a, b, c, d] = await h.clients(4);
        await warmUp([a!, b!, c!, d!]);
        const sem = { limit: 2, timeoutMs: 20_000 } as const;
        const one = await a!.acquire("sem-fifo", sem);
        const two = await b!.acquire("sem-fifo", sem);
        const first = c!.acquire("sem-fifo", sem).then((lease) => ["W1", lease] as const);
        // Give W1 time to join the queue before W2, from another client, starts.
        await sleep(100);
        const second = d!.acquire("sem-fifo", sem).then((lease) => ["W2", lease] as const);
        await sleep(100);
        await one.release();
        const [winner, lease] = await Promise.race([first, second]);
        expect(winner, "the first waiter gets the freed slot").toBe("W1");
        await Promise.all([two.release(), lease.release()]);
        const [, last] = await (winner === "W1" ? second : first);
        await last.release();
      },
    );

    it.skipIf(!capabilities.notify)(
      "a waiter is woken by the release, not by the next poll (notify)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        for (let round = 0; round < 2; round++) {
          const held = await a!.acquire("notify", { ttlMs: 60_000 });
          const waiting = b!.acquire("notify", { timeoutMs: 20_000 });
          // Long enough that a waiter's first attempts are over: only the release can wake it now.
          await sleep(1_300);
          const released = performance.now();
          await held.release();
          const next = await waiting;
          const gap = performance.now() - released;
          await next.release();
          expect(gap, "handoff gap in ms").toBeLessThan(400);
        }
      },
    );
  });
}
