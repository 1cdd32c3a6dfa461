import { sleep, type WaitForOptions, waitFor } from "./util.js";

/*
 * Measuring what idle clients cost a server: wait until a request counter
 * stands still (every request already under way has landed), then read how
 * far it moves over a window in which nothing is meant to happen.
 */

/** Waits until `count()` reads the same twice `intervalMs` (default 300 ms) apart; resolves with that reading. */
export async function untilSteady(
  count: () => Promise<number>,
  options: WaitForOptions = {},
): Promise<number> {
  let last = await count();
  return waitFor(
    async () => {
      const now = await count();
      const steady = now === last;
      last = now;
      return steady ? { now } : undefined;
    },
    { intervalMs: 300, message: "the request count to stand still", ...options },
  ).then(({ now }) => now);
}

/** How far `count()` moves while `windowMs` pass, and over how many seconds it was measured. */
export async function countOver(
  count: () => Promise<number>,
  windowMs: number,
): Promise<{ readonly requests: number; readonly seconds: number }> {
  const before = await count();
  const started = performance.now();
  await sleep(windowMs);
  const requests = (await count()) - before;
  return { requests, seconds: (performance.now() - started) / 1000 };
}
