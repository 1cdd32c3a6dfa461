import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { codeOf, Harness, sleep, warmUp } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Timeouts and cancellation, and that a waiter that gave up leaves nothing behind. */
export function waitingTests(options: ConformanceOptions, _capabilities: Capabilities): void {
  describe("timeouts and abort", () => {
    it("times out with LOCK_TIMEOUT and leaves nothing behind", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const held = await a!.acquire("timeout");
      const started = performance.now();
      expect(await codeOf(b!.acquire("timeout", { timeoutMs: 150 }))).toBe("LOCK_TIMEOUT");
      expect(performance.now() - started).toBeGreaterThanOrEqual(140);
      expect(await codeOf(b!.acquire("timeout", { timeoutMs: 0 }))).toBe("LOCK_TIMEOUT");
      await held.release();
      // The waiter that gave up must not keep the key: a store queue may still grant it while the
      // backend withdraws, but then it is handed back at once.
      const next = await c!.acquire("timeout", { timeoutMs: 10_000 });
      await next.release();
    });

    it("rejects at once with signal.reason when the signal is already aborted", async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      const reason = new Error("already aborted");
      const signal = AbortSignal.abort(reason);
      await expect(locks.acquire("pre-aborted", { signal })).rejects.toBe(reason);
      await expect(locks.tryAcquire("pre-aborted", { signal })).rejects.toBe(reason);
      expect(calls()).toBe(0);
    });

    it("rejects with signal.reason when aborted while waiting, and leaves nothing behind", async () => {
      const h = new Harness(options);
      const [a, c] = await h.clients(2);
      let grantsAfterAbort = 0;
      const controller = new AbortController();
      const b = await h.grantWatchedClient(() => {
        if (controller.signal.aborted) grantsAfterAbort++;
      });
      // Connected first: a fresh client's first attempt, still in flight at the abort, could
      // reach the store after the release below and be granted (then handed back), legitimately.
      await warmUp([b]);
      const held = await a!.acquire("abort");
      const reason = new Error("caller gave up");
      const waiting = b.acquire("abort", { signal: controller.signal });
      const outcome = waiting.then(
        () => "granted",
        (error: unknown) => error,
      );
      await sleep(50);
      controller.abort(reason);
      // The waiter must give up while the key is still held, not when it is released.
      const settled = await Promise.race([outcome, sleep(3_000).then(() => "still waiting")]);
      expect(settled).toBe(reason);
      await held.release();
      const next = await c!.acquire("abort", { timeoutMs: 5_000 });
      await next.release();
      // The core hands a late grant back, but a store queue that kept the aborted waiter
      // took the key for nobody in between: nothing may be left behind.
      expect(grantsAfterAbort, "grants to the aborted waiter").toBe(0);
    });

    it("many waiters all get the key in turn (no lost wake-ups)", async () => {
      const h = new Harness(options);
      const clients = await h.clients(3);
      const held = await clients[0]!.acquire("wakeups");
      const waiters = clients.flatMap((locks) =>
        [0, 1].map(() =>
          locks.acquire("wakeups", { timeoutMs: 20_000 }).then((lease) => lease.release()),
        ),
      );
      await sleep(20);
      await held.release();
      await Promise.all(waiters);
    });
  });
}
