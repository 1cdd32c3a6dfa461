import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { afterEach, describe, expect, it } from "vitest";
import { createLocks, LOCK_CHANNELS } from "../../src/index.js";
import { type Attempt, backendUnavailable, type LockRequest } from "../../src/toolkit/index.js";
import { codeOf, never, recorded, until } from "./backend.js";

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** Every acquire event, by channel name, until the test ends. */
function listenToAcquires(): Array<[string, Record<string, unknown>]> {
  const seen: Array<[string, Record<string, unknown>]> = [];
  for (const name of Object.values(LOCK_CHANNELS).filter((n) => n.startsWith("locks:acquire"))) {
    const fn = (message: unknown): void => {
      seen.push([name, message as Record<string, unknown>]);
    };
    subscribe(name, fn);
    stops.push(() => unsubscribe(name, fn));
  }
  return seen;
}

describe("withLock", () => {
  it("returns what fn returns and releases after it, also when fn throws", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const result = await locks.withLock("k", (lease) => {
      expect(lease.held).toBe(true);
      return 42;
    });
    expect(result).toBe(42);
    expect(backend.released).toHaveLength(1);
    const failure = new Error("job failed");
    await expect(
      locks.withLock("k", async () => {
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(backend.released).toHaveLength(2);
    expect(backend.holders.size).toBe(0);
    await locks.close();
  });
});

describe("close()", () => {
  it("releases leases, rejects waiters, aborts host.closing and closes the backend once", async () => {
    const order: string[] = [];
    const backend = recorded();
    const release = backend.release;
    backend.release = async (request, hold) => {
      order.push(`release ${request.key}`);
      await release(request, hold);
    };
    backend.close = async () => {
      order.push("close");
      backend.closed++;
    };
    const locks = createLocks(backend);
    const held = await locks.acquire("a");
    const waiting = codeOf(locks.acquire("a"));
    const bounded = codeOf(locks.acquire("a", { timeoutMs: 60_000 }));
    await until(() => backend.tried.length >= 3);
    expect(backend.host!.closing.aborted).toBe(false);
    const closing = locks.close();
    expect(backend.host!.closing.aborted).toBe(true);
    expect(locks.close()).toBe(closing);
    await closing;
    expect(await waiting).toBe("LOCK_CLOSED");
    expect(await bounded).toBe("LOCK_CLOSED");
    expect(held.held).toBe(false);
    expect(order[0]).toBe("release a");
    expect(order.at(-1)).toBe("close");
    expect(backend.closed).toBe(1);
    await locks[Symbol.asyncDispose]();
    expect(backend.closed).toBe(1);
  });

  it("refuses every call after it with LOCK_CLOSED", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    await locks.close();
    expect(await codeOf(locks.acquire("k"))).toBe("LOCK_CLOSED");
    expect(await codeOf(locks.tryAcquire("k"))).toBe("LOCK_CLOSED");
    expect(await codeOf(locks.acquire("k", { timeoutMs: 5 }))).toBe("LOCK_CLOSED");
    expect(await codeOf(locks.acquireAll(["k"]))).toBe("LOCK_CLOSED");
    await expect(locks.acquire("k")).rejects.toMatchObject({
      message: "the locks client was closed",
    });
    expect(backend.tried).toHaveLength(0);
  });

  it("does not wait long for releases that never answer", async () => {
    const backend = recorded({ release: () => never<void>() });
    const locks = createLocks(backend);
    await locks.acquire("k");
    const started = performance.now();
    await locks.close();
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(backend.closed).toBe(1);
  });

  it("waits for a release that answers within its grace period", async () => {
    let released = false;
    const backend = recorded({
      release: () =>
        new Promise<void>((resolve) =>
          setTimeout(() => {
            released = true;
            resolve();
          }, 60),
        ),
    });
    backend.close = async () => {
      expect(released).toBe(true);
      backend.closed++;
    };
    const locks = createLocks(backend);
    await locks.acquire("k");
    await locks.close();
    expect(backend.closed).toBe(1);
  });

  it("hands back a grant that arrives while it waits for calls in flight", async () => {
    let answer: (attempt: Attempt) => void = () => {};
    const backend = recorded({
      tryAcquire: (request) => {
        backend.tried.push(request);
        return new Promise<Attempt>((resolve) => {
          answer = resolve;
        });
      },
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("k"));
    await until(() => backend.tried.length === 1);
    const closing = locks.close();
    expect(await outcome).toBe("LOCK_CLOSED");
    answer({ granted: true, fencingToken: 1n, hold: "late" });
    await closing;
    expect(backend.released[0]!.owner).toBe(backend.tried[0]!.owner);
    expect(backend.releasedHolds).toEqual(["late"]);
  });

  it("ends a tryAcquire whose attempt fails after it without a second error", async () => {
    let fail: (error: unknown) => void = () => {};
    const backend = recorded({
      tryAcquire: () =>
        new Promise<Attempt>((_resolve, reject) => {
          fail = reject;
        }),
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.tryAcquire("k"));
    const closing = locks.close();
    fail(backendUnavailable("unit", "late"));
    expect(await outcome).toBe("LOCK_CLOSED");
    await closing;
    // The unknown outcome is cleaned up by owner, before the backend closes.
    expect(backend.releasedHolds).toEqual([undefined]);
    expect(backend.closed).toBe(1);
  });
});

describe("acquire events", () => {
  it("tell granted, busy, timeout, aborted, closed and failed apart", async () => {
    const failure = backendUnavailable("unit", new Error("down"));
    const backend = recorded();
    const locks = createLocks(backend, { namespace: "ev" });
    const seen = listenToAcquires();
    const held = await locks.acquire("k", { limit: 1 });
    expect(await locks.tryAcquire("k")).toBeNull();
    await locks.acquire("k", { timeoutMs: 10 }).catch(() => undefined);
    const reason = new Error("stop");
    const controller = new AbortController();
    const aborted = locks.acquire("k", { signal: controller.signal }).catch((e: unknown) => e);
    await until(() => backend.tried.length >= 4);
    controller.abort(reason);
    expect(await aborted).toBe(reason);
    backend.tryAcquire = async () => {
      throw failure;
    };
    await locks.acquire("j").catch(() => undefined);
    await locks.acquire("j", { signal: new AbortController().signal }).catch(() => undefined);
    backend.tryAcquire = () => never<Attempt>();
    const closed = locks.acquire("z").catch(() => undefined);
    await locks.close();
    await closed;
    const outcomes = seen.map(([name]) => name).filter((n) => n !== LOCK_CHANNELS.acquireStart);
    expect(outcomes).toEqual([
      LOCK_CHANNELS.acquireGranted,
      LOCK_CHANNELS.acquireBusy,
      LOCK_CHANNELS.acquireTimeout,
      LOCK_CHANNELS.acquireAborted,
      LOCK_CHANNELS.acquireFailed,
      LOCK_CHANNELS.acquireFailed,
      LOCK_CHANNELS.acquireAborted,
    ]);
    expect(seen.filter(([name]) => name === LOCK_CHANNELS.acquireStart)).toHaveLength(7);
    const [, start] = seen[0]!;
    expect(start).toEqual({
      key: "k",
      namespace: "ev",
      backend: "unit",
      mode: "exclusive",
      limit: 1,
    });
    const messages = seen.map(([, message]) => message);
    const granted = messages[1]!;
    expect(granted).toMatchObject({ key: "k", fencingToken: held.fencingToken });
    expect(granted.waitMs).toBeGreaterThanOrEqual(0);
    const failed = seen.find(([name]) => name === LOCK_CHANNELS.acquireFailed)![1];
    expect(failed).toMatchObject({ key: "j", error: failure });
    expect(failed.waitMs).toBeGreaterThanOrEqual(0);
    const lastAborted = seen.filter(([name]) => name === LOCK_CHANNELS.acquireAborted).at(-1)![1];
    expect(lastAborted.error).toMatchObject({ code: "LOCK_CLOSED" });
  });
});

describe("acquireAll", () => {
  it("takes the keys in one canonical order and gives the leases in the order asked", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const all = await locks.acquireAll(["b", "c", "a", "B"]);
    expect(backend.tried.map((r) => r.key)).toEqual(["B", "a", "b", "c"]);
    expect(all.leases.map((l) => l.key)).toEqual(["b", "c", "a", "B"]);
    expect(all.signal.aborted).toBe(false);
    const releasing = all.release();
    expect(all.release()).toBe(releasing);
    await releasing;
    expect(backend.released).toHaveLength(4);
    expect(all.signal.aborted).toBe(true);
    await all[Symbol.asyncDispose]();
    expect(backend.released).toHaveLength(4);
    await locks.close();
  });

  it("aborts its signal with the reason of the first lease that ends", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const all = await locks.acquireAll(["x", "y"]);
    backend.host!.lost(backend.holders.get("y"), "deleted");
    expect(all.signal.reason).toMatchObject({
      code: "LOCK_LOST",
      message: 'lock "y" lost: deleted',
    });
    await all.release();
    await locks.close();
  });

  it("is aborted at once when a lease was already lost when the set completed", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    // The second grant takes the store long enough for the first lease to be reported lost.
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = async (request: LockRequest) => {
      if (request.key === "b") backend.host!.lost(backend.holders.get("a"), "gone");
      return tryAcquire(request);
    };
    const all = await locks.acquireAll(["a", "b"]);
    expect(all.signal.aborted).toBe(true);
    expect(all.signal.reason).toMatchObject({ code: "LOCK_LOST" });
    await locks.close();
  });

  it("releases what it took when a later key fails, and rejects with that error", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const blocker = await locks.acquire("b");
    const started = performance.now();
    await expect(locks.acquireAll(["a", "b", "c"], { timeoutMs: 100 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    // One deadline for the set, not one per key.
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(backend.holders.has("a")).toBe(false);
    expect(backend.tried.some((r) => r.key === "c")).toBe(false);
    await blocker.release();
    await locks.close();
  });

  it("shares one timeout across the keys", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const blocker = await locks.acquire("z");
    const started = performance.now();
    // a and b are free; z waits for what is left of the 150 ms, not 150 ms more.
    await expect(locks.acquireAll(["a", "b", "z"], { timeoutMs: 150 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    await blocker.release();
    const all = await locks.acquireAll(["z", "a"], { timeoutMs: 1_000, ttlMs: 5_000 });
    expect(backend.tried.at(-1)).toMatchObject({ key: "z", ttlMs: 5_000 });
    await all.release();
    await locks.close();
  });

  it("refuses bad key sets and minHoldMs before any call", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const refusals: Array<[unknown, unknown, RegExp]> = [
      ["k", undefined, /^keys must be an array, got string$/],
      [[], undefined, /^keys must not be empty$/],
      [["a", ""], undefined, /^keys\[1\] must not be empty$/],
      [["a", 5], undefined, /^keys\[1\] must be a string, got number$/],
      [["a", "b", "a"], undefined, /^keys\[2\] repeats the key "a"$/],
      [["a"], { minHoldMs: 10 }, /^options\.minHoldMs is not a known option of acquireAll$/],
      [["a"], { timeoutMs: -1 }, /^timeoutMs must be/],
      [["a"], { timeoutMs: "1" }, /^timeoutMs must be/],
    ];
    for (const [keys, options, message] of refusals) {
      const error = await locks.acquireAll(keys as string[], options as never).catch((e) => e);
      expect(error, String(message)).toMatchObject({ code: "INVALID_ARGUMENT" });
      expect((error as Error).message).toMatch(message);
    }
    expect(backend.tried).toHaveLength(0);
    const all = await locks.acquireAll(["a"], null as never);
    await all.release();
    await locks.close();
  });
});
