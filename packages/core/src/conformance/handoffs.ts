import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import type { Lease } from "../lease.js";
import type { AcquireOptions } from "../options.js";
import { Harness, sleep } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** A hand-off slower than this waited for a poll: with notify, the safety poll comes seconds later. */
const PROMPT_MS = 500;
/** How late the slow store's replies come back. */
const SLOW_REPLY_MS = 50;

/**
 * When to free the key the waiter waits for: right after the waiter's
 * `answers`-th busy answer from the store (a waiter that polls), or
 * `afterMs` after its wait began (a waiter in the store's own queue, whose
 * polls, if any, are not ours to count).
 */
type Trigger = { readonly answers: number } | { readonly afterMs: number };

interface HandOff {
  readonly lease: Lease;
  /** ms from the start of `release` to the waiter's grant. */
  readonly gapMs: number;
}

/**
 * Waits for `key` with a client whose replies come `delayMs` late, calls
 * `release` (which frees what blocks the waiter) at the trigger the backend's
 * way of waiting calls for, and measures how long the hand-off took.
 */
async function handOff(
  h: Harness,
  key: string,
  options: AcquireOptions,
  release: () => Promise<unknown>,
  delayMs: number,
  trigger: (queued: boolean) => Trigger,
): Promise<HandOff> {
  let releasedAt: number | undefined;
  let releasing: Promise<unknown> = Promise.resolve();
  const fire = (): void => {
    if (releasedAt !== undefined) return;
    releasedAt = performance.now();
    releasing = release();
  };
  let busy = 0;
  let when: Trigger = { answers: 0 };
  const waiter = await h.slowClient(delayMs, (attempt) => {
    if (!attempt.granted && ++busy === ("answers" in when ? when.answers : -1)) fire();
  });
  when = trigger(typeof waiter.backend.acquire === "function");
  const waiting = waiter.acquire(key, { timeoutMs: 20_000, ...options });
  if ("afterMs" in when) {
    await sleep(when.afterMs);
    fire();
  }
  const lease = await waiting;
  const gapMs = performance.now() - releasedAt!;
  await releasing;
  return { lease, gapMs };
}

/**
 * Hand-offs that must not wait for a poll: a release that lands while the
 * waiter's attempt is still on the wire, and the release of a semaphore slot
 * or of readers (not only of an exclusive lock).
 */
export function handOffTests(options: ConformanceOptions, capabilities: Capabilities): void {
  // A waiter with notifications sleeps until its safety poll (seconds away) after its second busy
  // answer: the first attempt, and the one after subscribing. Only the release can wake it then.
  const afterFallbackPoll = (queued: boolean): Trigger =>
    queued ? { afterMs: 1_300 } : { answers: 2 };

  describe("hand-offs", () => {
    it(`a release that lands while a waiter's attempt is in flight on a slow store (replies ${SLOW_REPLY_MS} ms late) is not lost`, async () => {
      const h = new Harness(options);
      const holder = await h.client();
      const held = await holder.acquire("slow-store", { ttlMs: 60_000, timeoutMs: 10_000 });
      // Released while the store's "busy" answer to the waiter is on its way back: the first
      // attempt of a waiter that then joins the store's queue, else the first attempt after
      // subscribing, whose busy answer must not swallow the release's notification.
      const { lease, gapMs } = await handOff(
        h,
        "slow-store",
        {},
        () => held.release(),
        SLOW_REPLY_MS,
        (queued) => ({ answers: queued ? 1 : 2 }),
      );
      await lease.release();
      // A few slow round trips, well under the safety poll (and within the polling bound).
      expect(gapMs, "ms from the release to the grant").toBeLessThan(PROMPT_MS + 4 * SLOW_REPLY_MS);
    });

    it.skipIf(!capabilities.notify || !capabilities.semaphore)(
      "a freed semaphore slot is handed over by the release, not by the next poll (notify + semaphore)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const one = await a!.acquire("sem-notify", { limit: 2, ttlMs: 60_000, timeoutMs: 10_000 });
        const two = await b!.acquire("sem-notify", { limit: 2, ttlMs: 60_000, timeoutMs: 10_000 });
        const { lease, gapMs } = await handOff(
          h,
          "sem-notify",
          { limit: 2 },
          () => two.release(),
          0,
          afterFallbackPoll,
        );
        await Promise.all([one.release(), lease.release()]);
        expect(gapMs, "ms from the slot's release to the grant").toBeLessThan(PROMPT_MS);
      },
    );

    it.skipIf(!capabilities.notify || !capabilities.shared)(
      "a writer waiting on two readers is handed the key by their releases, not by the next poll (notify + shared)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const shared = { mode: "shared", ttlMs: 60_000, timeoutMs: 10_000 } as const;
        const r1 = await a!.acquire("rw-notify", shared);
        const r2 = await b!.acquire("rw-notify", shared);
        const { lease, gapMs } = await handOff(
          h,
          "rw-notify",
          {},
          () => Promise.all([r1.release(), r2.release()]),
          0,
          afterFallbackPoll,
        );
        await lease.release();
        expect(gapMs, "ms from the readers' releases to the grant").toBeLessThan(PROMPT_MS);
      },
    );
  });
}
