import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { afterEach, describe, expect, it } from "vitest";
import { createLocks, LOCK_CHANNELS } from "../../src/index.js";
import { backendUnavailable } from "../../src/toolkit/index.js";
import { abortReason, epochNow, never, recorded, until } from "./backend.js";

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** Collects the messages of one diagnostics channel until the test ends. */
function listen(name: string): Array<Record<string, unknown>> {
  const seen: Array<Record<string, unknown>> = [];
  const fn = (message: unknown): void => {
    seen.push(message as Record<string, unknown>);
  };
  subscribe(name, fn);
  stops.push(() => unsubscribe(name, fn));
  return seen;
}

describe("a lease", () => {
  it("shows its key, mode, token and a conservative expiry", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    const before = epochNow();
    const lease = await locks.acquire("k", { ttlMs: 10_000 });
    const after = epochNow();
    expect([lease.key, lease.mode, lease.fencingToken, lease.held]).toEqual([
      "k",
      "exclusive",
      1n,
      true,
    ]);
    // Start + TTL - drift (1% + 2 ms = 102 ms), as epoch ms.
    expect(lease.expiresAt).toBeGreaterThanOrEqual(before + 10_000 - 102 - 1);
    expect(lease.expiresAt).toBeLessThanOrEqual(after + 10_000 - 102 + 1);
    expect(Number.isInteger(lease.expiresAt)).toBe(true);
    await locks.close();
  });

  it("has no expiry, timer or extension on a backend without TTL", async () => {
    const backend = recorded({}, { ttl: false });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 30 });
    expect(lease.expiresAt).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(lease.held).toBe(true);
    expect(backend.extended).toHaveLength(0);
    // An explicit extend still asks the store, and keeps no deadline.
    await lease.extend(20);
    expect(backend.extended.map((e) => e.ttlMs)).toEqual([20]);
    expect(lease.expiresAt).toBeUndefined();
    await locks.close();
  });

  it("aborts its signal with LOCK_RELEASED on release, even when read afterwards", async () => {
    const locks = createLocks(recorded());
    const early = await locks.acquire("a");
    const signal = early.signal;
    expect(signal).toBe(early.signal);
    expect(signal.aborted).toBe(false);
    await early.release();
    expect(signal.reason).toMatchObject({
      code: "LOCK_RELEASED",
      message: 'lock "a" was released',
    });
    const late = await locks.acquire("b");
    await late.release();
    expect(late.held).toBe(false);
    expect(late.signal.aborted).toBe(true);
    expect(late.signal.reason).toMatchObject({ code: "LOCK_RELEASED" });
    await locks.close();
  });

  it("releases once, and only its own lock", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.acquire("k");
    const first = lease.release();
    expect(lease.release()).toBe(first);
    await first;
    expect(backend.released).toHaveLength(1);
    expect(backend.released[0]!.owner).toBe(backend.tried[0]!.owner);
    await lease[Symbol.asyncDispose]();
    expect(backend.released).toHaveLength(1);
    await locks.close();
  });

  it("rejects release() with the store's error while held, but not once lost", async () => {
    const failure = backendUnavailable("unit", new Error("down"));
    const backend = recorded({
      release: async () => {
        throw failure;
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const held = await locks.acquire("held");
    await expect(held.release()).rejects.toBe(failure);
    const lost = await locks.acquire("lost");
    backend.host!.lostAll("session gone");
    expect(lost.held).toBe(false);
    await expect(lost.release()).resolves.toBeUndefined();
    await locks.close();
  });

  it("extends by its TTL or a new one, moving the deadline, and checks the new TTL first", async () => {
    const backend = recorded({}, { minTtlMs: 50 });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 1_000 });
    const first = lease.expiresAt!;
    await lease.extend();
    await lease.extend(60_000.5);
    expect(backend.extended.map((e) => e.ttlMs)).toEqual([1_000, 60_001]);
    expect(backend.extended[0]!.request).toBe(backend.tried[0]);
    expect(lease.expiresAt! - first).toBeGreaterThan(58_000);
    await expect(lease.extend(49)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringMatching(/^ttlMs must be at least 50 ms/),
    });
    await expect(lease.extend(Number.NaN)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(backend.extended).toHaveLength(2);
    // The new TTL sticks: the next default extension asks for it again.
    await lease.extend();
    expect(backend.extended[2]!.ttlMs).toBe(60_001);
    await locks.close();
  });

  it("is lost when an extension is refused, and says so on every later extend", async () => {
    const backend = recorded({ extend: async () => false });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const error = await lease.extend().catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: "LOCK_LOST",
      message: 'lock "k" lost: the extension was refused: the lock is no longer held by this lease',
    });
    expect(lease.signal.reason).toBe(error);
    expect(lease.held).toBe(false);
    await expect(lease.extend()).rejects.toBe(error);
    await locks.close();
  });

  it("keeps the lease after a failed extension, and rejects with the store's error", async () => {
    const failure = backendUnavailable("unit", new Error("timeout"));
    let fail = true;
    const backend = recorded({
      async extend() {
        if (fail) throw failure;
        return true;
      },
    });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    await expect(lease.extend()).rejects.toBe(failure);
    expect(lease.held).toBe(true);
    fail = false;
    await expect(lease.extend()).resolves.toBeUndefined();
    await locks.close();
  });

  it("refuses to extend a released lease without asking the store", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.acquire("k");
    await lease.release();
    await expect(lease.extend()).rejects.toMatchObject({
      code: "LOCK_LOST",
      message: 'lock "k" is no longer held: it was released',
    });
    expect(backend.extended).toHaveLength(0);
    await locks.close();
  });

  it("is lost when released by the store while an extension was in flight", async () => {
    let answer: (held: boolean) => void = () => {};
    const backend = recorded({
      extend: () =>
        new Promise<boolean>((resolve) => {
          answer = resolve;
        }),
    });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    const extending = lease.extend();
    backend.host!.lost(backend.holders.get("k"), "revoked", "admin");
    answer(true);
    const error = await extending.catch((e: unknown) => e);
    expect(error).toMatchObject({ code: "LOCK_LOST", message: 'lock "k" lost: revoked' });
    expect((error as Error).cause).toBe("admin");
    await locks.close();
  });

  it("declares itself lost when extended or read after its deadline", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false });
    // Blocks the event loop past the deadline, as a pause would: no timer runs first.
    const lease = await locks.acquire("k", { ttlMs: 20 });
    const stop = performance.now() + 40;
    while (performance.now() < stop);
    await expect(lease.extend()).rejects.toMatchObject({
      code: "LOCK_LOST",
      message: expect.stringContaining("the lease's TTL passed without an extension"),
    });
    expect(backend.extended).toHaveLength(0);
    const other = await locks.acquire("j", { ttlMs: 20 });
    const until = performance.now() + 40;
    while (performance.now() < until);
    expect(other.held).toBe(false);
    expect(other.signal.reason).toMatchObject({ code: "LOCK_LOST" });
    await locks.close();
  });
});

describe("the watchdog", () => {
  it("extends at about a third of the TTL, by the TTL", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 300 });
    const started = performance.now();
    await until(() => backend.extended.length >= 1);
    const firstAfter = performance.now() - started;
    expect(firstAfter).toBeGreaterThanOrEqual(90);
    expect(backend.extended[0]!.ttlMs).toBe(300);
    await until(() => backend.extended.length >= 3);
    expect(lease.held).toBe(true);
    await lease.release();
    const count = backend.extended.length;
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(backend.extended).toHaveLength(count);
    await locks.close();
  });

  it("never extends with autoExtend false, and declares the loss at the deadline", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 100, autoExtend: false });
    const reason = await abortReason(lease.signal);
    expect(reason).toMatchObject({
      code: "LOCK_LOST",
      message: 'lock "k" lost: the lease\'s TTL passed without an extension',
    });
    expect(backend.extended).toHaveLength(0);
    await locks.close();
  });

  it("retries a failed extension soon, not a third of the TTL later", async () => {
    let calls = 0;
    const backend = recorded({
      async extend() {
        calls++;
        if (calls === 1) throw backendUnavailable("unit", new Error("blip"));
        return true;
      },
    });
    const locks = createLocks(backend);
    // First extension at ~1 s; the retry after max(10, min(1000, ttl / 10)) = 300 ms.
    const lease = await locks.acquire("k", { ttlMs: 3_000 });
    await until(() => calls >= 1);
    const failedAt = performance.now();
    await until(() => calls >= 2);
    expect(performance.now() - failedAt).toBeLessThan(900);
    expect(lease.held).toBe(true);
    await locks.close();
  });

  it("does not start a second extension while one is in flight", async () => {
    let calls = 0;
    const backend = recorded({
      extend: () => {
        calls++;
        return never<boolean>();
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { ttlMs: 150 });
    await abortReason(lease.signal);
    expect(calls).toBe(1);
    await locks.close();
  });
});

describe("lease events", () => {
  it("publish failed extensions with their error, and the release", async () => {
    const failure = backendUnavailable("unit", new Error("blip"));
    const backend = recorded({
      async extend() {
        throw failure;
      },
    });
    const extend = listen(LOCK_CHANNELS.extend);
    const release = listen(LOCK_CHANNELS.release);
    const locks = createLocks(backend, { autoExtend: false, namespace: "ev" });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    await lease.extend().catch(() => undefined);
    await lease.release();
    await lease.release();
    expect(extend).toHaveLength(1);
    expect(extend[0]).toMatchObject({
      key: "k",
      namespace: "ev",
      backend: "unit",
      mode: "exclusive",
      fencingToken: 1n,
      ok: false,
      error: failure,
    });
    expect(extend[0]!.durationMs).toBeGreaterThanOrEqual(0);
    expect(extend[0]!.heldMs).toBeGreaterThanOrEqual(0);
    expect(release).toHaveLength(1);
    expect(release[0]).toMatchObject({ key: "k", fencingToken: 1n });
    await locks.close();
  });

  it("publish a refused extension as not ok, and the loss once", async () => {
    const extend = listen(LOCK_CHANNELS.extend);
    const lost = listen(LOCK_CHANNELS.lost);
    const locks = createLocks(recorded({ extend: async () => false }), { autoExtend: false });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    await lease.extend().catch(() => undefined);
    await lease.extend().catch(() => undefined);
    expect(extend.map((e) => e.ok)).toEqual([false]);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.error).toBe(lease.signal.reason);
    await locks.close();
  });
});

describe("minHoldMs", () => {
  it("with TTL, shortens the lease to what is left instead of releasing", async () => {
    const backend = recorded({}, { minTtlMs: 500 });
    const locks = createLocks(backend, { autoExtend: false });
    const lease = await locks.acquire("k", { minHoldMs: 60_000, ttlMs: 120_000 });
    await lease.release();
    expect(backend.released).toHaveLength(0);
    expect(backend.extended).toHaveLength(1);
    expect(backend.extended[0]!.ttlMs).toBeGreaterThan(59_000);
    expect(backend.extended[0]!.ttlMs).toBeLessThanOrEqual(60_000);
    // Never below the backend's floor, however little is left.
    const short = await locks.acquire("j", { minHoldMs: 30, ttlMs: 5_000 });
    await short.release();
    expect(backend.extended[1]!.ttlMs).toBe(500);
    await locks.close();
  });

  it("without TTL, releases when the minimum hold is over, or at close()", async () => {
    const backend = recorded({}, { ttl: false });
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { minHoldMs: 150 });
    const releasedAt = performance.now();
    await lease.release();
    expect(backend.released).toHaveLength(0);
    await until(() => backend.released.length === 1);
    expect(performance.now() - releasedAt).toBeGreaterThanOrEqual(100);
    const long = await locks.acquire("j", { minHoldMs: 60_000 });
    await long.release();
    expect(backend.released).toHaveLength(1);
    await locks.close();
    expect(backend.released.map((r) => r.key)).toEqual(["k", "j"]);
  });

  it("releases at once once the minimum hold has passed", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const lease = await locks.acquire("k", { minHoldMs: 20 });
    await new Promise((resolve) => setTimeout(resolve, 40));
    await lease.release();
    expect(backend.released).toHaveLength(1);
    expect(backend.extended).toHaveLength(0);
    await locks.close();
  });
});
