/*
 * The core's written promises to backend authors (see the TSDoc of `Backend`
 * in src/backend.ts), one block each, every case with a backend that
 * misbehaves on purpose: each test fails if the core breaks its promise.
 */
import { describe, expect, it } from "vitest";
import { type Backend, createLocks } from "../src/index.js";
import {
  type Attempt,
  type Grant,
  type LockRequest,
  limitMismatch,
  type Unsubscribe,
} from "../src/toolkit/index.js";
import { abortReason, codeOf, never, type Recorded, recorded, until } from "./unit/backend.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise and the functions that settle it. */
function deferred<T>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
} {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A recorded backend that also logs every call, in order, and those made after its close(). */
interface Watched extends Recorded {
  /** Every call: "tryAcquire k", "subscribe k", "unsubscribe k", "close", ... */
  readonly log: string[];
  /** The calls made after close() was called: the promise is that there are none. */
  readonly late: string[];
}

const METHODS = ["tryAcquire", "acquire", "extend", "release", "subscribe", "inspect"] as const;

function watched(overrides: Partial<Backend> = {}, capabilities = {}): Watched {
  const backend = recorded(overrides, capabilities) as Recorded & {
    log: string[];
    late: string[];
  };
  backend.log = [];
  backend.late = [];
  let closed = false;
  const note = (call: string): void => {
    backend.log.push(call);
    if (closed) backend.late.push(call);
  };
  const methods = backend as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of METHODS) {
    const method = methods[name];
    if (typeof method !== "function") continue;
    methods[name] = (...args: unknown[]) => {
      const first = args[0] as LockRequest | string;
      const label = typeof first === "string" ? first : first.key;
      note(`${name} ${label}`);
      const result = method(...args);
      if (name !== "subscribe") return result;
      // The unsubscribe function a subscription returns is a call into the backend too.
      return Promise.resolve(result as Unsubscribe | Promise<Unsubscribe>).then(
        (unsubscribe) => () => {
          note(`unsubscribe ${label}`);
          return unsubscribe();
        },
      );
    };
  }
  const close = backend.close;
  backend.close = () => {
    note("close");
    closed = true;
    return close.call(backend);
  };
  return backend;
}

describe("promise: nothing is called after backend.close()", () => {
  it("with a watchdog due, and a lease's deadline passing while close() waits", async () => {
    // The first release never answers, so close() waits out its grace period while the
    // watchdog of each lease would fire many times over.
    let releases = 0;
    const backend = watched({
      release: () => (++releases === 1 ? never<void>() : Promise.resolve()),
    });
    const locks = createLocks(backend);
    const extending = await locks.acquire("extending", { ttlMs: 150 });
    const expiring = await locks.acquire("expiring", { ttlMs: 200, autoExtend: false });
    await until(() => backend.extended.length >= 1);
    await locks.close();
    expect(extending.signal.aborted && expiring.signal.aborted).toBe(true);
    await sleep(250);
    expect(backend.late).toEqual([]);
    expect(backend.log.at(-1)).toBe("close");
  });

  it("with a wait polling: its attempt in flight answers with a grant after close()", async () => {
    const attempt = deferred<Attempt>();
    const backend = watched(
      {
        tryAcquire: (request) => {
          backend.tried.push(request);
          // The first attempt finds the key taken; the one after subscribing hangs past close().
          return backend.tried.length === 1 ? Promise.resolve({ granted: false }) : attempt.promise;
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const waiting = codeOf(locks.acquire("k"));
    await until(() => backend.tried.length === 2);
    await locks.close();
    attempt.resolve({ granted: true, fencingToken: 1n, hold: { late: true } });
    expect(await waiting).toBe("LOCK_CLOSED");
    await sleep(50);
    expect(backend.late).toEqual([]);
  });

  it("with a wait polling whose attempt answers while close() waits: it unsubscribes first", async () => {
    const attempt = deferred<Attempt>();
    const backend = watched(
      {
        tryAcquire: (request) => {
          backend.tried.push(request);
          return backend.tried.length === 1 ? Promise.resolve({ granted: false }) : attempt.promise;
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const waiting = codeOf(locks.acquire("k"));
    await until(() => backend.tried.length === 2);
    const closing = locks.close();
    await sleep(30);
    attempt.resolve({ granted: false });
    await closing;
    expect(await waiting).toBe("LOCK_CLOSED");
    expect(backend.log.slice(-2)).toEqual(["unsubscribe k", "close"]);
    expect(backend.late).toEqual([]);
  });

  it("with a wait polling between attempts: it unsubscribes before the backend closes", async () => {
    const backend = watched(
      {
        tryAcquire: async (request) => {
          backend.tried.push(request);
          return { granted: false };
        },
        subscribe: () => () => {},
      },
      { notify: true },
    );
    const locks = createLocks(backend);
    const waiting = codeOf(locks.acquire("k"));
    await until(() => backend.tried.length === 2);
    await locks.close();
    expect(await waiting).toBe("LOCK_CLOSED");
    await sleep(50);
    expect(backend.late).toEqual([]);
    expect(backend.log).toContain("unsubscribe k");
  });

  it("with a late grant, from the first attempt or from the store's queue", async () => {
    const first = deferred<Attempt>();
    const queued = deferred<Grant | undefined>();
    const backend = watched({
      tryAcquire: (request) => {
        backend.tried.push(request);
        return request.key === "first" ? first.promise : Promise.resolve({ granted: false });
      },
      // The queue ignores the signal and grants after close() (a store that lost the cancel).
      acquire: () => queued.promise,
    });
    const locks = createLocks(backend);
    const outcomes = [codeOf(locks.acquire("first")), codeOf(locks.acquire("queued"))];
    await until(() => backend.log.includes("acquire queued"));
    await locks.close();
    first.resolve({ granted: true, fencingToken: 1n, hold: "first" });
    queued.resolve({ granted: true, fencingToken: 2n, hold: "queued" });
    expect(await Promise.all(outcomes)).toEqual(["LOCK_CLOSED", "LOCK_CLOSED"]);
    await sleep(50);
    expect(backend.late).toEqual([]);
  });

  it("with a minHoldMs release pending: it is made before close, not after", async () => {
    const backend = watched({}, { ttl: false });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { minHoldMs: 100 });
    await lease.release();
    expect(backend.released).toHaveLength(0);
    await locks.close();
    expect(backend.log.slice(-2)).toEqual(["release k", "close"]);
    await sleep(200);
    expect(backend.late).toEqual([]);
  });
});

describe("promise: any non-LockError a backend throws reaches the user as BACKEND_UNAVAILABLE, with it as cause", () => {
  type Method = "tryAcquire" | "acquire" | "extend" | "release" | "subscribe";
  const cases: Array<[Method, "throws" | "rejects"]> = [];
  for (const method of ["tryAcquire", "acquire", "extend", "release", "subscribe"] as const)
    for (const how of ["throws", "rejects"] as const) cases.push([method, how]);

  it.each(cases)("%s %s", async (method, how) => {
    const failure = new TypeError(`${method} broke`);
    const broken =
      how === "throws"
        ? () => {
            throw failure;
          }
        : () => Promise.reject(failure);
    // acquire and subscribe are reached only after a first attempt found the key taken.
    const waits = method === "acquire" || method === "subscribe";
    const backend = recorded(
      {
        ...(waits ? { tryAcquire: async () => ({ granted: false }) } : {}),
        ...(method === "subscribe" ? { subscribe: broken as never } : {}),
        ...(method === "acquire" ? { acquire: broken as never } : {}),
        ...(method === "extend" || method === "release" ? { [method]: broken } : {}),
        ...(method === "tryAcquire" ? { tryAcquire: broken as never } : {}),
      },
      { notify: method === "subscribe" },
    );
    const locks = createLocks(backend, { autoExtend: false });
    let outcome: Promise<unknown>;
    if (method === "extend" || method === "release") {
      const lease = await locks.acquire("k");
      outcome = method === "extend" ? lease.extend() : lease.release();
    } else {
      outcome = method === "tryAcquire" ? locks.tryAcquire("k") : locks.acquire("k");
    }
    const error = await outcome.then(
      () => "resolved",
      (e: unknown) => e,
    );
    expect(error).toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      message: `unit backend unavailable: ${method} broke`,
    });
    expect((error as Error).cause).toBe(failure);
    await locks.close();
  });

  it("passes a LockError through as it is", async () => {
    const mismatch = limitMismatch(3, 2);
    const backend = recorded({
      tryAcquire: () => {
        throw mismatch;
      },
    });
    const locks = createLocks(backend);
    await expect(locks.tryAcquire("k")).rejects.toBe(mismatch);
    await locks.close();
  });

  it("wraps an error thrown by the backend's close() too", async () => {
    const failure = new Error("close broke");
    const backend = recorded({
      close: () => {
        throw failure;
      },
    });
    const locks = createLocks(backend);
    const error = await locks.close().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "BACKEND_UNAVAILABLE" });
    expect((error as Error).cause).toBe(failure);
  });
});

describe("promise: a lease the core declares lost is released through the backend exactly once, with its hold", () => {
  async function expectReleasedOnce(
    backend: Recorded,
    lease: { release(): Promise<void>; signal: AbortSignal },
    hold: unknown,
  ): Promise<void> {
    expect(await abortReason(lease.signal)).toMatchObject({ code: "LOCK_LOST" });
    await until(() => backend.released.length >= 1);
    // The user releases it again, as `await using` or a finally block would.
    await lease.release();
    await lease.release();
    await sleep(20);
    expect(backend.releasedHolds).toEqual([hold]);
  }

  it("when its deadline passed", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 30 });
    const hold = backend.holders.get("k");
    expect(hold).toBeDefined();
    await expectReleasedOnce(backend, lease, hold);
    await locks.close();
  });

  it("when `held` finds its deadline passed before the watchdog did", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 20 });
    const hold = backend.holders.get("k");
    const end = performance.now() + 40;
    while (performance.now() < end);
    expect(lease.held).toBe(false);
    await expectReleasedOnce(backend, lease, hold);
    await locks.close();
  });

  it("when an extension was refused", async () => {
    const backend = recorded({ extend: async () => false });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const hold = backend.holders.get("k");
    await expect(lease.extend()).rejects.toMatchObject({ code: "LOCK_LOST" });
    await expectReleasedOnce(backend, lease, hold);
    await locks.close();
  });

  it("when the backend reported it with host.lost(hold), twice", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const other = await locks.acquire("other", { ttlMs: 5_000 });
    const hold = backend.holders.get("k");
    backend.host!.lost(hold, "key deleted");
    backend.host!.lost(hold, "key deleted again");
    await expectReleasedOnce(backend, lease, hold);
    expect(other.held).toBe(true);
    await locks.close();
  });

  it("when the backend reported every lock lost with host.lostAll, each with its own hold", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const a = await locks.acquire("a", { ttlMs: 5_000 });
    const b = await locks.acquire("b", { ttlMs: 5_000 });
    const holds = [backend.holders.get("a"), backend.holders.get("b")];
    backend.host!.lostAll("session closed", new Error("socket closed"));
    backend.host!.lostAll("session closed");
    for (const lease of [a, b]) {
      expect(lease.signal.reason).toMatchObject({ code: "LOCK_LOST" });
      await lease.release();
    }
    await until(() => backend.released.length >= 2);
    await sleep(20);
    expect(backend.releasedHolds).toEqual(holds);
    await locks.close();
    expect(backend.releasedHolds).toEqual(holds);
  });

  it("even when that release fails, and without throwing at the user", async () => {
    const failure = new Error("store down");
    const backend = recorded({
      release: async (request, hold) => {
        backend.released.push(request);
        backend.releasedHolds.push(hold);
        throw failure;
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const hold = backend.holders.get("k");
    backend.host!.lost(hold, "revoked");
    await expect(lease.release()).resolves.toBeUndefined();
    await expectReleasedOnce(backend, lease, hold);
    await locks.close();
  });
});

describe("promise: close() closes the backend after every hold is released and every call settled, or after a bounded grace", () => {
  it("waits for releases and calls in flight that answer within the grace period", async () => {
    const order: string[] = [];
    const extension = deferred<boolean>();
    const attempt = deferred<Attempt>();
    const backend = recorded({
      async release(request, hold) {
        await sleep(40);
        order.push(`released ${request.key}`);
        backend.releasedHolds.push(hold);
      },
      extend: () => extension.promise.finally(() => order.push("extend settled")),
      close: async () => {
        order.push("close");
      },
    });
    const tryAcquire = backend.tryAcquire;
    backend.tryAcquire = (request) =>
      request.key === "slow"
        ? attempt.promise.finally(() => order.push("attempt settled"))
        : tryAcquire(request);
    const locks = createLocks(backend, { autoExtend: false });
    const a = await locks.acquire("a", { ttlMs: 5_000 });
    await locks.acquire("b", { ttlMs: 5_000 });
    const extending = a.extend().catch(() => undefined);
    const slow = codeOf(locks.acquire("slow"));
    const closing = locks.close();
    await sleep(60);
    extension.resolve(true);
    attempt.resolve({ granted: false });
    await closing;
    await extending;
    expect(await slow).toBe("LOCK_CLOSED");
    expect(order.at(-1)).toBe("close");
    expect([...order].sort()).toEqual(
      ["attempt settled", "close", "extend settled", "released a", "released b"].sort(),
    );
  });

  it("closes the backend after about 250 ms when a release or a call hangs", async () => {
    let closedAt = 0;
    const backend = recorded({
      release: () => never<void>(),
      extend: () => never<boolean>(),
      close: async () => {
        closedAt = performance.now();
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    void lease.extend().catch(() => undefined);
    const started = performance.now();
    await locks.close();
    expect(closedAt).toBeGreaterThan(0);
    // Not at once (it waited), not forever (it is bounded).
    expect(closedAt - started).toBeGreaterThanOrEqual(200);
    expect(closedAt - started).toBeLessThan(2_000);
  });
});

describe("promise: holds are passed back; release(request, undefined) only when the outcome is unknown", () => {
  it("extend and release get the hold the grant returned, with the same request", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const hold = backend.holders.get("k");
    await lease.extend();
    await lease.release();
    expect(backend.extended).toEqual([{ request: backend.tried[0], hold, ttlMs: 5_000 }]);
    expect(backend.extended[0]!.hold).toBe(hold);
    expect(backend.released).toEqual([backend.tried[0]]);
    expect(backend.releasedHolds[0]).toBe(hold);
    await locks.close();
  });

  it("the watchdog passes the hold back too, and a hold that is not an object works", async () => {
    const backend = recorded({
      tryAcquire: async (request) => {
        backend.tried.push(request);
        return { granted: true, fencingToken: 1n, hold: 42 };
      },
      extend: async (request, hold, ttlMs) => {
        backend.extended.push({ request, hold, ttlMs });
        return true;
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 60 });
    await until(() => backend.extended.length >= 2);
    await lease.release();
    expect(backend.extended.map((e) => e.hold)).toEqual(backend.extended.map(() => 42));
    expect(backend.releasedHolds).toEqual([42]);
    await locks.close();
  });

  it("an attempt that failed is cleaned up with release(request, undefined)", async () => {
    const backend = recorded({
      tryAcquire: async (request) => {
        backend.tried.push(request);
        throw new Error("connection reset");
      },
    });
    const locks = createLocks(backend);
    expect(await codeOf(locks.acquire("k"))).toBe("BACKEND_UNAVAILABLE");
    await until(() => backend.released.length === 1);
    expect(backend.released[0]).toBe(backend.tried[0]);
    expect(backend.releasedHolds).toEqual([undefined]);
    await locks.close();
  });

  it("an attempt that failed during a wait, polled or queued, is cleaned up with release(request, undefined)", async () => {
    for (const queued of [false, true]) {
      const backend = recorded({
        tryAcquire: async (request) => {
          backend.tried.push(request);
          // The first attempt finds the key taken; the wait's attempt fails after it may have run.
          if (backend.tried.length === 1) return { granted: false };
          throw new Error("connection reset");
        },
        ...(queued
          ? {
              acquire: async () => {
                throw new Error("connection reset");
              },
            }
          : {}),
      });
      const locks = createLocks(backend);
      expect(await codeOf(locks.acquire("k", { timeoutMs: 5_000 }))).toBe("BACKEND_UNAVAILABLE");
      await until(() => backend.released.length === 1);
      expect(backend.released[0]).toBe(backend.tried[0]);
      expect(backend.releasedHolds).toEqual([undefined]);
      await locks.close();
    }
  });

  it("a grant that came too late is handed back with its own hold", async () => {
    const backend = recorded();
    const tryAcquire = backend.tryAcquire;
    let late = true;
    backend.tryAcquire = async (request) => {
      if (!late) return tryAcquire(request);
      late = false;
      backend.tried.push(request);
      return { granted: true, fencingToken: 1n, validUntil: performance.now() - 1, hold: "late" };
    };
    const locks = createLocks(backend);
    const lease = await locks.acquire("k");
    await until(() => backend.released.length === 1);
    expect(backend.released[0]).toBe(backend.tried[0]);
    expect(backend.releasedHolds).toEqual(["late"]);
    await lease.release();
    await locks.close();
  });

  it("a queued grant that came after the caller gave up is handed back with its own hold", async () => {
    const backend = recorded({
      tryAcquire: async () => ({ granted: false }),
      // The grant and the abort cross.
      acquire: (_request, wait) =>
        new Promise((resolve) => {
          wait.signal.addEventListener("abort", () =>
            resolve({ granted: true, fencingToken: 1n, hold: "queued" }),
          );
        }),
    });
    const locks = createLocks(backend);
    expect(await codeOf(locks.acquire("k", { timeoutMs: 30 }))).toBe("LOCK_TIMEOUT");
    await until(() => backend.released.length === 1);
    expect(backend.releasedHolds).toEqual(["queued"]);
    await locks.close();
  });
});

describe("promise: acquire() may decline, and the core then waits with subscribe and tryAcquire", () => {
  it("polls after acquire resolved undefined, woken by the subscription", async () => {
    let declined = 0;
    let wake: () => void = () => {};
    const backend = recorded(
      {
        async acquire() {
          declined++;
          return undefined;
        },
        subscribe(_request, onChange) {
          wake = onChange;
          return () => {};
        },
      },
      { notify: true, fair: true },
    );
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    const started = performance.now();
    const waiting = locks.acquire("k");
    // The first attempt, then the one after subscribing.
    await until(() => backend.tried.length === 3);
    await held.release();
    wake();
    const lease = await waiting;
    // Woken by the notification, not by the 1 s fallback poll.
    expect(performance.now() - started).toBeLessThan(900);
    expect(declined).toBe(1);
    expect(lease.held).toBe(true);
    await locks.close();
  });

  it("polls without a subscription too, bounded by its back-off", async () => {
    const backend = recorded({ acquire: async () => undefined });
    const locks = createLocks(backend);
    const held = await locks.acquire("k");
    const waiting = locks.acquire("k");
    await until(() => backend.tried.length >= 4);
    await held.release();
    expect((await waiting).fencingToken).toBe(2n);
    await locks.close();
  });
});

describe("promise: one backend shared by two clients", () => {
  it("is bound once; host.lost(hold) reaches only the client holding it, lostAll reaches both", async () => {
    let binds = 0;
    const backend = recorded();
    const bind = backend.bind!;
    backend.bind = (host) => {
      binds++;
      bind(host);
    };
    const one = createLocks(backend, { namespace: "one", autoExtend: false });
    const two = createLocks(backend, { namespace: "two", autoExtend: false });
    expect(binds).toBe(1);
    const a = await one.acquire("a", { ttlMs: 5_000 });
    const b = await two.acquire("b", { ttlMs: 5_000 });
    const c = await two.acquire("c", { ttlMs: 5_000 });
    backend.host!.lost(backend.holders.get("b"), "key deleted");
    expect([a.held, b.held, c.held]).toEqual([true, false, true]);
    backend.host!.lostAll("connection lost");
    expect([a.held, c.held]).toEqual([false, false]);
    await until(() => backend.released.length === 3);
    expect(backend.releasedHolds.map((h) => (h as { key: string }).key).sort()).toEqual([
      "a",
      "b",
      "c",
    ]);
    await one.close();
    await two.close();
  });

  it("is closed once, by the last client to close, when host.closing aborts; no call after it", async () => {
    const backend = watched();
    const one = createLocks(backend, { namespace: "one" });
    const two = createLocks(backend, { namespace: "two" });
    const closing = backend.host!.closing;
    const lease = await two.acquire("k", { ttlMs: 150 });
    await one.close();
    expect(closing.aborted).toBe(false);
    expect(backend.closed).toBe(0);
    // The other client goes on: its watchdog still extends through the backend.
    const extensions = backend.extended.length;
    await until(() => backend.extended.length > extensions);
    expect(lease.held).toBe(true);
    const done = two.close();
    expect(closing.aborted).toBe(true);
    expect(closing.reason).toMatchObject({ code: "LOCK_CLOSED" });
    await done;
    await one.close();
    expect(backend.closed).toBe(1);
    await sleep(100);
    expect(backend.late).toEqual([]);
    expect(backend.log.filter((call) => call === "close")).toEqual(["close"]);
  });
});
