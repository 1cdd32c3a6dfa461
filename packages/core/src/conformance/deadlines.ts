import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { Harness, sleep, wallNow } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** A lease's TTL as long as a default one: the 1% drift allowance is then 300 ms, far above timer noise. */
const LONG_TTL_MS = 30_000;
/** How late a timer may fire on a loaded machine before we call the loss signal late. */
const TIMER_SLACK_MS = 250;

/**
 * The holder's view of its deadline against the store's: the lease ends
 * (expiresAt, signal) with the documented clock-drift allowance to spare,
 * before anyone else can take the key, and the backend itself refuses to
 * extend or release a lock that was taken over behind the holder's back.
 */
export function deadlineTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("deadlines and takeovers", () => {
    it.skipIf(!capabilities.ttl)(
      "expiresAt leaves the 1% drift allowance of the TTL: granted at once, after a wait, extended (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        // The core dates a lease from the start of the attempt that won it, which a test cannot
        // see; the moment the call returned is later, so an honest lease is always within this
        // bound, while one without the allowance (start + TTL) exceeds it unless the call took
        // longer than the allowance itself (300 ms).
        const bound = (returned: number): number => returned + LONG_TTL_MS - LONG_TTL_MS * 0.01;
        const lease = await a!.acquire("drift", { ttlMs: LONG_TTL_MS, timeoutMs: 10_000 });
        expect(lease.expiresAt!, "granted at once").toBeLessThanOrEqual(bound(wallNow()));
        await lease.extend(LONG_TTL_MS);
        expect(lease.expiresAt!, "after extend()").toBeLessThanOrEqual(bound(wallNow()));
        const waiting = b!.acquire("drift", { ttlMs: LONG_TTL_MS, timeoutMs: 10_000 });
        await sleep(50);
        await lease.release();
        const next = await waiting;
        expect(next.expiresAt!, "granted after a wait").toBeLessThanOrEqual(bound(wallNow()));
        await next.release();
      },
    );

    it.skipIf(!capabilities.ttl)(
      "an abandoned lease's signal aborts by start + TTL - 1%, before another client can take the key (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const start = performance.now();
        const abandoned = await a!.acquire("abandoned", {
          ttlMs: h.ttlMs,
          autoExtend: false,
          timeoutMs: 10_000,
        });
        let abortedAt = Number.POSITIVE_INFINITY;
        abandoned.signal.addEventListener("abort", () => {
          abortedAt = performance.now();
        });
        let abortedAtGrant: boolean | undefined;
        const next = await b!
          .acquire("abandoned", { timeoutMs: h.ttlMs * 10 + 5_000 })
          .then((lease) => {
            abortedAtGrant = abandoned.signal.aborted;
            return lease;
          });
        expect(abortedAtGrant, "the old holder was told before the key was taken").toBe(true);
        expect(abortedAt - start, "ms from the acquire to the loss signal").toBeLessThanOrEqual(
          h.ttlMs * 0.99 + TIMER_SLACK_MS,
        );
        await next.release();
      },
    );

    it.skipIf(!capabilities.ttl)(
      "the backend's extend resolves false, and its release leaves the new holder's lock, after a takeover (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        // Straight to the backend: no lease, so no watchdog extends it and the core declares nothing lost.
        const taken = h.request("taken-over");
        const attempt = await a!.backend.tryAcquire(taken);
        expect(attempt.granted).toBe(true);
        const hold = attempt.granted ? attempt.hold : undefined;
        const next = await b!.acquire("taken-over", { timeoutMs: h.ttlMs * 10 + 5_000 });
        expect(await a!.backend.extend(taken, hold, h.ttlMs), "extend by the old owner").toBe(
          false,
        );
        await a!.backend.release(taken, hold);
        expect(await c!.tryAcquire("taken-over"), "after release by the old owner").toBeNull();
        await next.extend();
        expect(next.signal.aborted).toBe(false);
        await next.release();
      },
    );
  });
}
