import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { createLocks } from "../../src/index.js";
import { type Attempt, backendUnavailable } from "../../src/toolkit/index.js";
import { abortReason, codeOf, epochNow, never, recorded, until } from "./backend.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Timers alive in this process now: what would keep it from exiting. */
function liveTimers(): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
}

describe("polling without notifications", () => {
  it("backs off from 2 ms to 100 ms between attempts, jittered", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    const waiting = locks.acquire("k");
    await sleep(600);
    const attempts = backend.tried.length - 1;
    // 2 + 4 + ... + 64 ms (126 ms, jittered), then every 100 ms: about a dozen attempts in 600 ms.
    expect(attempts).toBeGreaterThanOrEqual(7);
    expect(attempts).toBeLessThanOrEqual(40);
    await held.release();
    await waiting;
    await locks.close();
  });

  it("with notifications, retries a grant that came too late at once, not at the fallback poll", async () => {
    let attempts = 0;
    const backend = recorded(
      {
        async tryAcquire(): Promise<Attempt> {
          attempts++;
          if (attempts === 1) return { granted: false };
          return attempts === 2
            ? { granted: true, fencingToken: 1n, validUntil: performance.now() - 1 }
            : { granted: true, fencingToken: 2n };
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const started = performance.now();
    const lease = await locks.acquire("k");
    expect(lease.fencingToken).toBe(2n);
    expect(performance.now() - started).toBeLessThan(700);
    await locks.close();
  });
});

describe("timeouts and signals leave nothing behind", () => {
  it("timeoutMs 0 takes a free key", async () => {
    const locks = createLocks(recorded());
    const lease = await locks.acquire("k", { timeoutMs: 0 });
    expect(lease.held).toBe(true);
    await locks.close();
  });

  it("a timeout beyond setTimeout's range waits, and the signal still ends it", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.acquire("k");
    const controller = new AbortController();
    const waiting = locks.acquire("k", { timeoutMs: 1e12, signal: controller.signal });
    const outcome = waiting.catch((e: unknown) => e);
    await sleep(100);
    const reason = new Error("stop");
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    await locks.close();
  });

  it("an acquire granted at once leaves no timer and no abort listener", async () => {
    const locks = createLocks(recorded());
    const controller = new AbortController();
    const before = liveTimers();
    const lease = await locks.acquire("k", {
      timeoutMs: 8_000,
      signal: controller.signal,
      autoExtend: false,
      ttlMs: 60_000,
    });
    await lease.release();
    expect(liveTimers()).toBe(before);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
    // And after a wait that timed out.
    const held = await locks.acquire("h", { ttlMs: 60_000, autoExtend: false });
    await codeOf(locks.acquire("h", { timeoutMs: 30, signal: controller.signal }));
    await held.release();
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
    await locks.close();
    expect(liveTimers()).toBe(before);
  });
});

describe("clean-up of unknown outcomes", () => {
  it("swallows a failing clean-up release, and close() waits for clean-ups in flight", async () => {
    const failure = backendUnavailable("unit", new Error("reset"));
    let cleanups = 0;
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        throw failure;
      },
      async release() {
        await sleep(50);
        cleanups++;
        throw failure;
      },
    });
    backend.close = async () => {
      expect(cleanups).toBe(2);
      backend.closed++;
    };
    const locks = createLocks(backend);
    await expect(locks.acquire("a")).rejects.toBe(failure);
    await expect(locks.tryAcquire("b", { ttlMs: 1_000 })).rejects.toBe(failure);
    await locks.close();
    expect(backend.closed).toBe(1);
  });

  it("close() ends a first attempt that then finds the key taken", async () => {
    let answer: (attempt: Attempt) => void = () => {};
    let calls = 0;
    const backend = recorded({
      tryAcquire: () =>
        new Promise<Attempt>((resolve) => {
          calls++;
          answer = resolve;
        }),
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("k"));
    await locks.close();
    answer({ granted: false });
    expect(await outcome).toBe("LOCK_CLOSED");
    // No wait starts after close().
    await sleep(20);
    expect(calls).toBe(1);
  });
});

describe("extensions and the deadline", () => {
  it("an extension sets the deadline to its start + TTL - drift and re-arms the watchdog", async () => {
    const locks = createLocks(recorded(), { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 100 });
    const before = epochNow();
    await lease.extend(60_000);
    // 1% + 2 ms = 602 ms of drift.
    expect(lease.expiresAt!).toBeLessThanOrEqual(epochNow() + 60_000 - 602 + 2);
    expect(lease.expiresAt!).toBeGreaterThanOrEqual(before + 60_000 - 602 - 2);
    await sleep(200);
    expect(lease.held).toBe(true);
    expect(lease.signal.aborted).toBe(false);
    await locks.close();
  });

  it("the watchdog waits for its extension in flight, even when extend() moved the deadline", async () => {
    let calls = 0;
    const backend = recorded({
      extend() {
        calls++;
        // The watchdog's extension hangs; the holder's own extend() answers.
        return calls === 1 ? never<boolean>() : Promise.resolve(true);
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 300 });
    await until(() => calls === 1);
    await lease.extend();
    // The extend() re-armed the timer for ~100 ms later; the first extension still hangs.
    await sleep(200);
    expect(calls).toBe(2);
    // The deadline of the holder's extension is still enforced.
    expect(await abortReason(lease.signal)).toMatchObject({ code: "LOCK_LOST" });
    await locks.close();
  });

  it("retries a failed extension after a tenth of the TTL, not at once", async () => {
    const times: number[] = [];
    const backend = recorded({
      async extend() {
        times.push(performance.now());
        if (times.length === 1) throw backendUnavailable("unit", new Error("blip"));
        return true;
      },
    });
    const locks = createLocks(backend);
    await locks.acquire("k", { ttlMs: 3_000 });
    await until(() => times.length >= 2);
    // max(10, min(1000, 3000 / 10)) = 300 ms.
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(200);
    expect(times[1]! - times[0]!).toBeLessThan(900);
    await locks.close();
  });
});

describe("options at their limits", () => {
  it("accepts the longest minimum hold and shows a 40-character value whole", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.tryAcquire("k", { minHoldMs: 2_147_483_647 });
    expect(lease).not.toBeNull();
    const error = await locks.acquire("k", { mode: "x".repeat(40) as never }).catch((e) => e);
    expect((error as Error).message).toMatch(/got "x{40}"$/);
    const notSignal = { addEventListener() {} };
    await expect(locks.acquire("k", { signal: notSignal as never })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: "signal must be an AbortSignal, got object",
    });
    await locks.close();
  });
});
