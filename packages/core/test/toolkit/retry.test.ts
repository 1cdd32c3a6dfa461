import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { retryInBackground } from "../../src/toolkit/index.js";
import { TimerWatch } from "./timers.js";

describe("retryInBackground", () => {
  it("runs the task until it succeeds, backing off in between, and resolves true", async () => {
    const times: number[] = [];
    const controller = new AbortController();
    const done = await retryInBackground(
      async () => {
        times.push(performance.now());
        if (times.length < 4) throw new Error("not yet");
      },
      { signal: controller.signal, firstDelayMs: 10, maxDelayMs: 20 },
    );
    expect(done).toBe(true);
    expect(times).toHaveLength(4);
    // 10 ms, then doubled to 20, then capped at 20.
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps[0]).toBeGreaterThanOrEqual(9);
    expect(gaps[1]).toBeGreaterThanOrEqual(19);
    expect(gaps[2]).toBeGreaterThanOrEqual(19);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("resolves true at once when the task succeeds the first time", async () => {
    let calls = 0;
    const done = await retryInBackground(async () => calls++, {
      signal: new AbortController().signal,
    });
    expect([done, calls]).toEqual([true, 1]);
  });

  it("stops when the signal aborts, mid-sleep, and resolves false, leaving no timer", async () => {
    const watch = new TimerWatch();
    const controller = new AbortController();
    let calls = 0;
    const retrying = retryInBackground(
      async () => {
        calls++;
        throw new Error("down");
      },
      { signal: controller.signal, firstDelayMs: 5, maxDelayMs: 60_000 },
    );
    await watch.until(() => calls >= 3);
    controller.abort(new Error("closing"));
    expect(await retrying).toBe(false);
    const after = calls;
    await watch.sleep(50);
    expect(calls).toBe(after);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("never runs the task for a signal that already aborted", async () => {
    let calls = 0;
    const done = await retryInBackground(async () => calls++, { signal: AbortSignal.abort() });
    expect([done, calls]).toEqual([false, 0]);
  });

  it("gives up after giveUpAfterMs, resolving false, never later than its last sleep", async () => {
    const watch = new TimerWatch();
    let calls = 0;
    const started = performance.now();
    const done = await retryInBackground(
      async () => {
        calls++;
        throw new Error("down");
      },
      { signal: new AbortController().signal, firstDelayMs: 10, giveUpAfterMs: 60 },
    );
    const took = performance.now() - started;
    expect(done).toBe(false);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(took).toBeGreaterThanOrEqual(55);
    // Its sleeps are cut to what is left: it does not sleep a whole back-off past the limit.
    expect(took).toBeLessThan(2_000);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("never rejects, whatever the task throws", async () => {
    const done = retryInBackground(
      () => {
        throw "not even an Error";
      },
      { signal: new AbortController().signal, firstDelayMs: 1, giveUpAfterMs: 5 },
    );
    await expect(done).resolves.toBe(false);
  });
});
