import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { raceAbort, singleFlight, sleep } from "../../src/toolkit/index.js";

function liveTimers(): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
}

describe("sleep", () => {
  it("resolves after ms, leaving no timer and no listener", async () => {
    const controller = new AbortController();
    const before = liveTimers();
    const started = performance.now();
    await sleep(30, controller.signal);
    expect(performance.now() - started).toBeGreaterThanOrEqual(28);
    expect(liveTimers()).toBe(before);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("rejects with signal.reason as soon as it aborts, leaving no timer and no listener", async () => {
    const controller = new AbortController();
    const before = liveTimers();
    const sleeping = sleep(60_000, controller.signal);
    expect(liveTimers()).toBe(before + 1);
    const reason = new Error("closing");
    controller.abort(reason);
    await expect(sleeping).rejects.toBe(reason);
    expect(liveTimers()).toBe(before);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("rejects at once for a signal that already aborted, arming nothing", async () => {
    const before = liveTimers();
    const sleeping = sleep(60_000, AbortSignal.abort("gone"));
    expect(liveTimers()).toBe(before);
    await expect(sleeping).rejects.toBe("gone");
  });
});

describe("raceAbort", () => {
  it("settles like the promise, and stops listening", async () => {
    const controller = new AbortController();
    await expect(raceAbort(Promise.resolve(7), controller.signal)).resolves.toBe(7);
    const failure = new Error("store down");
    await expect(raceAbort(Promise.reject(failure), controller.signal)).rejects.toBe(failure);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("rejects with signal.reason as soon as it aborts, while the promise still runs", async () => {
    const controller = new AbortController();
    let finish: (value: number) => void = () => {};
    const slow = new Promise<number>((resolve) => {
      finish = resolve;
    });
    const racing = raceAbort(slow, controller.signal);
    const reason = new Error("timed out");
    controller.abort(reason);
    await expect(racing).rejects.toBe(reason);
    finish(1);
    await expect(slow).resolves.toBe(1);
  });

  it("rejects at once for a signal that already aborted", async () => {
    await expect(raceAbort(new Promise(() => {}), AbortSignal.abort("gone"))).rejects.toBe("gone");
  });

  it("adds one listener per signal however many races share it, none once they settle", async () => {
    const controller = new AbortController();
    const races = Array.from({ length: 50 }, (_, i) =>
      raceAbort(Promise.resolve(i), controller.signal),
    );
    expect(getEventListeners(controller.signal, "abort").length).toBeLessThanOrEqual(1);
    await Promise.all(races);
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });
});

describe("singleFlight", () => {
  it("shares a run in flight among callers, and starts anew once it settled", async () => {
    let runs = 0;
    let finish: (value: number) => void = () => {};
    const connect = singleFlight(() => {
      runs++;
      return new Promise<number>((resolve) => {
        finish = resolve;
      });
    });
    const a = connect();
    const b = connect();
    expect(a).toBe(b);
    finish(1);
    expect(await a).toBe(1);
    const c = connect();
    expect(c).not.toBe(a);
    finish(2);
    expect(await c).toBe(2);
    expect(runs).toBe(2);
  });

  it("starts anew after a failed run", async () => {
    let runs = 0;
    const connect = singleFlight(async () => {
      runs++;
      if (runs === 1) throw new Error("refused");
      return runs;
    });
    await expect(connect()).rejects.toThrow("refused");
    expect(await connect()).toBe(2);
  });
});
