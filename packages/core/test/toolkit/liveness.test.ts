import { describe, expect, it } from "vitest";
import { Liveness, monotonicNow } from "../../src/toolkit/index.js";
import { TimerWatch } from "./timers.js";

/*
 * Real timers, short intervals: the Liveness under test arms its own
 * (unref'd) timers, and a TimerWatch checks none is left once it stopped.
 */

describe("Liveness", () => {
  it("beats at its interval, moves validUntil forward, and leaves no timer once stopped", async () => {
    const watch = new TimerWatch();
    const signals: AbortSignal[] = [];
    const lost: unknown[] = [];
    const started = monotonicNow();
    const liveness = new Liveness({
      validForMs: 300,
      intervalMs: 20,
      beat: async (signal) => {
        signals.push(signal);
      },
      lost: (cause) => lost.push(cause),
    });
    const first = liveness.validUntil;
    expect(first).toBeGreaterThanOrEqual(started + 300);
    await watch.until(() => signals.length >= 3);
    expect(liveness.validUntil).toBeGreaterThan(first);
    expect(liveness.validUntil).toBeLessThanOrEqual(monotonicNow() + 300);
    liveness.stop();
    liveness.stop();
    const beats = signals.length;
    await watch.sleep(80);
    expect(signals).toHaveLength(beats);
    expect(lost).toEqual([]);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("declares the loss once, with the last beat's error, when every beat fails", async () => {
    const watch = new TimerWatch();
    let beats = 0;
    const lost: unknown[] = [];
    const liveness = new Liveness({
      validForMs: 100,
      intervalMs: 20,
      beat: async () => {
        beats++;
        throw new Error(`beat ${beats} refused`);
      },
      lost: (cause) => lost.push(cause),
    });
    await watch.until(() => lost.length === 1);
    expect(beats).toBeGreaterThanOrEqual(2);
    expect((lost[0] as Error).message).toBe(`beat ${beats} refused`);
    // Not before validity ran out.
    expect(monotonicNow()).toBeGreaterThanOrEqual(liveness.validUntil);
    const after = beats;
    await watch.sleep(80);
    expect(lost).toHaveLength(1);
    expect(beats).toBe(after);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("declares the loss on time when a beat hangs, and aborts that beat", async () => {
    const watch = new TimerWatch();
    const signals: AbortSignal[] = [];
    const lost: unknown[] = [];
    const liveness = new Liveness({
      validForMs: 80,
      intervalMs: 20,
      beat: (signal) => {
        signals.push(signal);
        return new Promise<void>(() => {});
      },
      lost: (cause) => lost.push(cause),
    });
    await watch.until(() => lost.length === 1);
    // One beat at a time: the hanging one is not joined by others.
    expect(signals).toHaveLength(1);
    expect(signals[0]!.aborted).toBe(true);
    expect((lost[0] as Error).message).toBe("no keep-alive was answered in time");
    expect(monotonicNow()).toBeGreaterThanOrEqual(liveness.validUntil);
    await watch.sleep(60);
    expect(lost).toHaveLength(1);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("recovers when a beat succeeds after failures, before validity ran out", async () => {
    const watch = new TimerWatch();
    let beats = 0;
    const lost: unknown[] = [];
    const liveness = new Liveness({
      validForMs: 200,
      intervalMs: 20,
      beat: async () => {
        beats++;
        if (beats <= 2) throw new Error("blip");
      },
      lost: (cause) => lost.push(cause),
    });
    const first = liveness.validUntil;
    await watch.until(() => beats >= 5);
    expect(lost).toEqual([]);
    expect(liveness.validUntil).toBeGreaterThan(first);
    liveness.stop();
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });

  it("stops a beat in flight, and a beat that succeeds after stop() moves nothing", async () => {
    const watch = new TimerWatch();
    let finish: () => void = () => {};
    const signals: AbortSignal[] = [];
    const liveness = new Liveness({
      validForMs: 1_000,
      intervalMs: 10,
      beat: (signal) => {
        signals.push(signal);
        return new Promise<void>((resolve) => {
          finish = resolve;
        });
      },
      lost: () => {
        throw new Error("not lost");
      },
    });
    await watch.until(() => signals.length === 1);
    const validUntil = liveness.validUntil;
    liveness.stop();
    expect(signals[0]!.aborted).toBe(true);
    finish();
    await watch.sleep(30);
    expect(liveness.validUntil).toBe(validUntil);
    expect(signals).toHaveLength(1);
    expect(await watch.armed()).toBe(0);
    watch.stop();
  });
});
