import { describe, expect, it } from "vitest";
import { createLocks } from "../../src/index.js";
import { type Attempt, backendUnavailable, type LockRequest } from "../../src/toolkit/index.js";
import { abortReason, codeOf, epochNow, never, recorded, until } from "./backend.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe("tryAcquire and acquire", () => {
  it("tryAcquire answers null for a taken key after one attempt", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    expect(await locks.tryAcquire("k")).toBeNull();
    expect(await locks.tryAcquire("k", { ttlMs: 1_000 })).toBeNull();
    expect(backend.tried).toHaveLength(3);
    await held.release();
    await locks.close();
  });

  it("timeoutMs 0 makes one attempt and times out at once", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.acquire("k");
    await expect(locks.acquire("k", { timeoutMs: 0 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
      name: "LockTimeoutError",
      message: 'timed out after 0 ms waiting for lock "k"',
    });
    expect(backend.tried).toHaveLength(2);
    await locks.close();
  });

  it("times out a wait after timeoutMs, naming the key and the time", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.acquire("k");
    const started = performance.now();
    await expect(locks.acquire("k", { timeoutMs: 80 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
      message: 'timed out after 80 ms waiting for lock "k"',
    });
    expect(performance.now() - started).toBeGreaterThanOrEqual(75);
    // It polled meanwhile (2 ms doubling to 100 ms, jittered), not once.
    expect(backend.tried.length).toBeGreaterThan(3);
    await locks.close();
  });

  it("polls a backend without notifications and gets the key soon after its release", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    const waiting = locks.acquire("k");
    await sleep(50);
    await held.release();
    const releasedAt = performance.now();
    const lease = await waiting;
    expect(performance.now() - releasedAt).toBeLessThan(600);
    expect(lease.fencingToken).toBe(2n);
    await locks.close();
  });

  it("waits with the backend's notifications, subscribing before the next attempt", async () => {
    const listeners = new Set<() => void>();
    const order: string[] = [];
    let unsubscribed = 0;
    const backend = recorded(
      {
        async subscribe(request, onChange) {
          order.push(`subscribe ${request.key}`);
          listeners.add(onChange);
          return () => {
            listeners.delete(onChange);
            unsubscribed++;
          };
        },
      },
      { notify: true },
    );
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = (request) => {
      order.push(`try ${request.key}`);
      return tryAcquire(request);
    };
    const release = backend.release;
    backend.release = async (request, hold) => {
      await release(request, hold);
      for (const wake of listeners) wake();
    };
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    const waiting = locks.acquire("k");
    await until(() => listeners.size === 1);
    await sleep(200);
    // Notified waits poll only every second: not once per few ms.
    expect(backend.tried.length).toBeLessThanOrEqual(3);
    await held.release();
    const releasedAt = performance.now();
    await waiting;
    expect(performance.now() - releasedAt).toBeLessThan(500);
    expect(order.slice(0, 3)).toEqual(["try k", "try k", "subscribe k"]);
    expect(order[3]).toBe("try k");
    expect(unsubscribed).toBe(1);
    await locks.close();
  });

  it("does not lose a notification that lands while an attempt is in flight", async () => {
    let wake: () => void = () => {};
    let attempts = 0;
    const backend = recorded(
      {
        async tryAcquire(): Promise<Attempt> {
          attempts++;
          if (attempts === 2) {
            // The holder releases while this attempt is on its way: the store said "taken".
            await sleep(20);
            wake();
            return { granted: false };
          }
          return attempts >= 3 ? { granted: true, fencingToken: 1n } : { granted: false };
        },
        subscribe(_request, onChange) {
          wake = onChange;
          return () => {};
        },
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const started = performance.now();
    await locks.acquire("k");
    // Not the 1 s fallback poll.
    expect(performance.now() - started).toBeLessThan(700);
    expect(attempts).toBe(3);
    await locks.close();
  });

  it("follows retryAfterMs instead of the fallback poll", async () => {
    for (const retryAfterMs of [0, 30]) {
      let attempts = 0;
      const backend = recorded(
        {
          async tryAcquire(): Promise<Attempt> {
            attempts++;
            return attempts >= 3
              ? { granted: true, fencingToken: 1n }
              : { granted: false, retryAfterMs };
          },
          subscribe: () => () => {},
        },
        { notify: true },
      );
      const locks = createLocks(backend);
      const started = performance.now();
      await locks.acquire("k");
      expect(performance.now() - started, `retryAfterMs ${retryAfterMs}`).toBeLessThan(700);
      await locks.close();
    }
  });

  it("still polls, slowly, when notifications never come, and an unsubscribe may fail", async () => {
    let attempts = 0;
    const backend = recorded(
      {
        async tryAcquire(): Promise<Attempt> {
          attempts++;
          return attempts >= 3 ? { granted: true, fencingToken: 1n } : { granted: false };
        },
        subscribe: () => async () => {
          throw new Error("unsubscribe failed");
        },
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const started = performance.now();
    const lease = await locks.acquire("k");
    expect(performance.now() - started).toBeGreaterThanOrEqual(900);
    expect(lease.fencingToken).toBe(1n);
    await locks.close();
  });

  it("rejects with the store's error while waiting, after cleaning up by owner", async () => {
    const failure = backendUnavailable("unit", new Error("down"));
    let attempts = 0;
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        attempts++;
        if (attempts === 1) return { granted: false };
        throw failure;
      },
    });
    const locks = createLocks(backend);
    await expect(locks.acquire("k", { timeoutMs: 5_000 })).rejects.toBe(failure);
    await expect(locks.acquire("j")).rejects.toBe(failure);
    await locks.close();
  });

  it("hands back a grant that came too late, and keeps waiting", async () => {
    let attempts = 0;
    const backend = recorded({
      async tryAcquire(request): Promise<Attempt> {
        attempts++;
        backend.tried.push(request);
        // The first grant arrives after its own validity: the core must refuse it.
        return attempts === 1
          ? { granted: true, fencingToken: 1n, validUntil: performance.now() - 1 }
          : { granted: true, fencingToken: 2n };
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k");
    expect(lease.fencingToken).toBe(2n);
    expect(backend.released.map((r) => r.owner)).toEqual([backend.tried[0]!.owner]);
    await locks.close();
  });

  it("dates a direct grant by validUntil only when it is earlier than its own estimate", async () => {
    const now = performance.now();
    let validUntil = now + 5_000;
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: true, fencingToken: 1n, validUntil };
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const earlier = await locks.acquire("a", { ttlMs: 60_000 });
    expect(earlier.expiresAt).toBe(Math.round(performance.timeOrigin + validUntil));
    validUntil = performance.now() + 600_000;
    const later = await locks.acquire("b", { ttlMs: 60_000 });
    // Its own estimate: start + TTL - drift (602 ms).
    expect(later.expiresAt! - epochNow()).toBeLessThanOrEqual(60_000 - 602 + 5);
    expect(later.expiresAt! - epochNow()).toBeGreaterThan(58_000);
    await locks.close();
  });
});

describe("a backend with its own queue", () => {
  it("waits in it, with the wait's signal, and dates the grant by validUntil", async () => {
    let signal: AbortSignal | undefined;
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: false };
      },
      async acquire(_request, wait) {
        signal = wait.signal;
        await sleep(30);
        return { granted: true, fencingToken: 7n, validUntil: performance.now() + 40_000 };
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 1_000 });
    expect(signal).toBeInstanceOf(AbortSignal);
    expect(lease.fencingToken).toBe(7n);
    // Later than start + TTL: a queued grant is dated by the store.
    expect(lease.expiresAt! - epochNow()).toBeGreaterThan(30_000);
    await locks.close();
  });

  it("hands back a queued grant that expired on the way, and asks again", async () => {
    let calls = 0;
    const requests: LockRequest[] = [];
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: false };
      },
      async acquire(request) {
        calls++;
        requests.push(request);
        return calls === 1
          ? { granted: true, fencingToken: 1n, validUntil: performance.now() - 1 }
          : { granted: true, fencingToken: 2n };
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k");
    expect(lease.fencingToken).toBe(2n);
    expect(calls).toBe(2);
    expect(backend.released).toEqual([requests[0]]);
    await locks.close();
  });

  it("ends the queued wait with the timeout, and hands back a grant that raced it", async () => {
    const backend = recorded({
      async tryAcquire(): Promise<Attempt> {
        return { granted: false };
      },
      // The store's grant and the abort cross: the grant comes back after the timeout fired.
      acquire: (_request, wait) =>
        new Promise((resolve) => {
          wait.signal.addEventListener("abort", () => resolve({ granted: true, fencingToken: 1n }));
        }),
    });
    const locks = createLocks(backend);
    await expect(locks.acquire("k", { timeoutMs: 50 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    await until(() => backend.released.length >= 1);
    await locks.close();
  });
});

describe("a store that stops answering during a wait", () => {
  it("is still bounded by timeoutMs, and by close()", async () => {
    let attempts = 0;
    const backend = recorded({
      tryAcquire: () =>
        // Every first attempt finds the key taken; every attempt of the wait hangs.
        ++attempts % 2 === 1 ? Promise.resolve({ granted: false }) : never<Attempt>(),
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("k", { timeoutMs: 100 }));
    const bound = sleep(2_000).then(() => "still waiting");
    expect(await Promise.race([outcome, bound])).toBe("LOCK_TIMEOUT");
    const unbounded = codeOf(locks.acquire("k"));
    await until(() => attempts === 4);
    const closing = locks.close();
    expect(await Promise.race([unbounded, bound])).toBe("LOCK_CLOSED");
    await closing;
  });
});

describe("signals", () => {
  it("end a wait with the signal's reason", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.acquire("k");
    const controller = new AbortController();
    const waiting = locks.acquire("k", { signal: controller.signal });
    await until(() => backend.tried.length >= 3);
    const reason = new Error("user gave up");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    const attempts = backend.tried.length;
    await sleep(150);
    expect(backend.tried).toHaveLength(attempts);
    await locks.close();
  });

  it("hand back a grant the store made after the caller gave up", async () => {
    const controller = new AbortController();
    const reason = new Error("gave up");
    const backend = recorded();
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = async (request) => {
      const attempt = await tryAcquire(request);
      controller.abort(reason);
      return attempt;
    };
    const locks = createLocks(backend);
    await expect(locks.acquire("k", { signal: controller.signal })).rejects.toBe(reason);
    await until(() => backend.released.length === 1);
    expect(backend.holders.size).toBe(0);
    await locks.close();
  });

  it("bound the first attempt as well as the wait", async () => {
    const backend = recorded({ tryAcquire: () => never<Attempt>() });
    const locks = createLocks(backend);
    const controller = new AbortController();
    const outcome = codeOf(locks.acquire("k", { signal: controller.signal }));
    controller.abort(backendUnavailable("unit", "x"));
    expect(await outcome).toBe("BACKEND_UNAVAILABLE");
    await locks.close();
  });
});

describe("losses the backend reports", () => {
  it("end only the lease of the hold named; an unknown hold changes nothing", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const a = await locks.acquire("a");
    const b = await locks.acquire("b");
    backend.host!.lost({ key: "b", owner: backend.tried[1]!.owner }, "a look-alike hold");
    expect([a.held, b.held]).toEqual([true, true]);
    backend.host!.lost(backend.holders.get("b"), "key deleted");
    expect([a.held, b.held]).toEqual([true, false]);
    expect(await abortReason(b.signal)).toMatchObject({
      message: 'lock "b" lost: key deleted',
    });
    // A released lease is no longer tracked: a later loss of all does not touch it.
    await a.release();
    backend.host!.lostAll("session closed");
    expect(a.signal.reason).toMatchObject({ code: "LOCK_RELEASED" });
    await locks.close();
  });
});
