import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { afterEach, describe, expect, it } from "vitest";
import { createLocks, LOCK_CHANNELS } from "../../src/index.js";
import { type Attempt, backendUnavailable, settledWithin } from "../../src/toolkit/index.js";
import { codeOf, epochNow, never, recorded, until } from "./backend.js";

/*
 * Cases the first mutation run (pnpm mutate) showed no test checked.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

function listen(name: string): Array<Record<string, unknown>> {
  const seen: Array<Record<string, unknown>> = [];
  const fn = (message: unknown): void => {
    seen.push(message as Record<string, unknown>);
  };
  subscribe(name, fn);
  stops.push(() => unsubscribe(name, fn));
  return seen;
}

describe("the client", () => {
  it("refuses acquireAll after close() before looking at the keys", async () => {
    const locks = createLocks(recorded());
    await locks.close();
    expect(await codeOf(locks.acquireAll([]))).toBe("LOCK_CLOSED");
  });

  it("refuses a function dressed as a backend", () => {
    const { tryAcquire, extend, release, close, capabilities } = recorded();
    const backend = Object.assign(() => {}, { tryAcquire, extend, release, close, capabilities });
    expect(() => createLocks(backend)).toThrow(
      expect.objectContaining({ code: "INVALID_ARGUMENT" }),
    );
  });

  it("tryAcquire with a signal answers null for a taken key", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.acquire("k");
    const controller = new AbortController();
    expect(await locks.tryAcquire("k", { signal: controller.signal })).toBeNull();
    expect(backend.tried).toHaveLength(2);
    await locks.close();
  });

  it("a bounded acquire rejects with the store's error from its first attempt", async () => {
    const failure = backendUnavailable("unit", new Error("down"));
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        throw failure;
      },
    });
    const locks = createLocks(backend);
    await expect(locks.acquire("k", { timeoutMs: 1_000 })).rejects.toBe(failure);
    await locks.close();
  });

  it("a bounded acquire reports a failed first attempt even when the key would be free next", async () => {
    const failure = backendUnavailable("unit", new Error("reset"));
    const backend = recorded();
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = async (request) => {
      if (backend.tried.length === 0) {
        backend.tried.push(request);
        throw failure;
      }
      return tryAcquire(request);
    };
    const locks = createLocks(backend);
    await expect(locks.acquire("k", { timeoutMs: 1_000 })).rejects.toBe(failure);
    // Its outcome is unknown: cleaned up by owner, and no second attempt.
    await until(() => backend.released.length === 1);
    expect(backend.released[0]!.owner).toBe(backend.tried[0]!.owner);
    expect(backend.tried).toHaveLength(1);
    await locks.close();
  });

  it("close() ends a queued wait with LOCK_CLOSED whatever error the queue gives up with", async () => {
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: false };
      },
      acquire: (_request, wait) =>
        new Promise((_resolve, reject) => {
          wait.signal.addEventListener("abort", () => reject(new Error("queue entry removed")));
        }),
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("k"));
    await sleep(20);
    await locks.close();
    expect(await outcome).toBe("LOCK_CLOSED");
  });
});

describe("waiting", () => {
  it("dates a queued grant without validUntil from the start of the wait", async () => {
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: false };
      },
      async acquire() {
        return { granted: true, fencingToken: 1n };
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const before = epochNow();
    const lease = await locks.acquire("k", { ttlMs: 10_000 });
    expect(lease.expiresAt! - before).toBeGreaterThan(9_000);
    expect(lease.expiresAt! - epochNow()).toBeLessThanOrEqual(10_000);
    await locks.close();
  });

  it("ignores a negative retryAfterMs rather than polling without pause", async () => {
    const backend = recorded(
      {
        async tryAcquire(request): Promise<Attempt> {
          backend.tried.push(request);
          return { granted: false, retryAfterMs: -5 };
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("k", { timeoutMs: 300 }));
    expect(await outcome).toBe("LOCK_TIMEOUT");
    // The first attempt, the one after subscribing, then the 1 s fallback poll: not hundreds.
    expect(backend.tried.length).toBeLessThanOrEqual(4);
    await locks.close();
  });

  it("lets the timeout fire while a queue answers at once with grants that came too late", async () => {
    const backend = recorded({
      tryAcquire: () => Promise.resolve({ granted: false }),
      acquire: () =>
        Promise.resolve({ granted: true, fencingToken: 1n, validUntil: performance.now() - 1 }),
    });
    const locks = createLocks(backend);
    expect(await codeOf(locks.acquire("k", { timeoutMs: 100 }))).toBe("LOCK_TIMEOUT");
    await locks.close();
  });

  it("ends a notified wait at once when its signal aborts, not at the next poll", async () => {
    const backend = recorded(
      {
        async tryAcquire(): Promise<Attempt> {
          return { granted: false };
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const controller = new AbortController();
    const outcome = locks.acquire("k", { signal: controller.signal }).catch((e: unknown) => e);
    await sleep(100);
    const reason = new Error("stop");
    const abortedAt = performance.now();
    controller.abort(reason);
    expect(await outcome).toBe(reason);
    expect(performance.now() - abortedAt).toBeLessThan(500);
    await locks.close();
  });

  it("shares one deadline across the keys of acquireAll", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const first = await locks.acquire("a");
    await locks.acquire("z");
    setTimeout(() => void first.release(), 300);
    const started = performance.now();
    expect(await codeOf(locks.acquireAll(["a", "z"], { timeoutMs: 500 }))).toBe("LOCK_TIMEOUT");
    // 300 ms for "a", then what is left of the 500 for "z": not 500 more.
    expect(performance.now() - started).toBeLessThan(750);
    await locks.close();
  });
});

describe("leases", () => {
  it("a lost lease stays lost: release() neither publishes a release nor changes the reason", async () => {
    const released = listen(LOCK_CHANNELS.release);
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k");
    backend.host!.lostAll("gone");
    const lost = lease.signal.reason;
    await lease.release();
    expect(released).toHaveLength(0);
    await expect(lease.extend()).rejects.toBe(lost);
    await locks.close();
  });

  it("await using releases the lease", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    {
      await using lease = await locks.acquire("k");
      expect(lease.held).toBe(true);
    }
    expect(backend.released).toHaveLength(1);
    await locks.close();
  });

  it("says why it was lost when `held` finds the deadline passed", async () => {
    const locks = createLocks(recorded(), { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 20 });
    const end = performance.now() + 40;
    while (performance.now() < end);
    expect(lease.held).toBe(false);
    expect((lease.signal.reason as Error).message).toBe(
      'lock "k" lost: the lease\'s TTL passed without an extension',
    );
    await locks.close();
  });

  it("times events from their own start: durations are never longer than what was measured", async () => {
    const extend = listen(LOCK_CHANNELS.extend);
    const granted = listen(LOCK_CHANNELS.acquireGranted);
    const busy = listen(LOCK_CHANNELS.acquireBusy);
    const failed = listen(LOCK_CHANNELS.acquireFailed);
    let fail = false;
    const backend = recorded();
    const extendOk = backend.extend;
    backend.extend = async (request, hold, ttlMs) => {
      if (fail) throw backendUnavailable("unit", "x");
      return extendOk(request, hold, ttlMs);
    };
    const locks = createLocks(backend, { autoExtend: false });
    const t0 = performance.now();
    const lease = await locks.acquire("k");
    await lease.extend();
    fail = true;
    await lease.extend().catch(() => undefined);
    expect(await locks.tryAcquire("k")).toBeNull();
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = async () => {
      throw backendUnavailable("unit", "y");
    };
    await locks.acquire("j").catch(() => undefined);
    backend.tryAcquire = tryAcquire;
    const elapsed = performance.now() - t0 + 1;
    expect(extend.map((e) => e.ok)).toEqual([true, false]);
    for (const e of extend) {
      expect(e.durationMs as number).toBeLessThanOrEqual(elapsed);
      expect(e.heldMs as number).toBeLessThanOrEqual(elapsed);
    }
    for (const e of [...granted, ...busy, ...failed]) {
      expect(e.waitMs as number).toBeLessThanOrEqual(elapsed);
      expect(e.waitMs as number).toBeGreaterThanOrEqual(0);
    }
    expect(busy[0]).toMatchObject({ key: "k", backend: "unit" });
    expect(failed).toHaveLength(1);
    await locks.close();
  });

  it("passes on a store that rejects with null as BACKEND_UNAVAILABLE, even with acquire events observed", async () => {
    const failed = listen(LOCK_CHANNELS.acquireFailed);
    const backend = recorded({ tryAcquire: () => Promise.reject(null) });
    const locks = createLocks(backend);
    const error = await locks.acquire("k").catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "BACKEND_UNAVAILABLE", cause: null });
    expect(failed[0]!.error).toBe(error);
    await locks.close();
  });
});

describe("settledWithin", () => {
  it("waits for one promise or many, at most ms, never rejects and leaves no timer", async () => {
    const timers = (): number =>
      process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
    const before = timers();
    let started = performance.now();
    await settledWithin(never(), 50);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    started = performance.now();
    await settledWithin([Promise.reject(new Error("x")), sleep(20)], 5_000);
    await settledWithin(Promise.resolve(1), 5_000);
    await settledWithin([], 5_000);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(timers()).toBeLessThanOrEqual(before);
  });
});
