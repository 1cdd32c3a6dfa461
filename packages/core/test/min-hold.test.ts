import { describe, expect, it } from "vitest";
import { createLocks } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";
import { recorded } from "./unit/backend.js";

function withoutTtl() {
  return recorded({}, { ttl: false });
}

describe("minHoldMs", () => {
  it("keeps a key with server-side TTL held until grant + minHoldMs after an early release", async () => {
    const namespace = `min-hold-${Math.random()}`;
    const a = createLocks(memoryBackend(), { namespace });
    const b = createLocks(memoryBackend(), { namespace });
    const granted = performance.now();
    const ran = await a.withLock("nightly", () => "ran", { minHoldMs: 400 });
    expect(ran).toBe("ran");
    expect(await b.tryAcquire("nightly"), "taken right after the early release").toBeNull();
    const next = await b.acquire("nightly", { timeoutMs: 5_000 });
    expect(performance.now() - granted).toBeGreaterThanOrEqual(390);
    await next.release();
    await Promise.all([a.close(), b.close()]);
  });

  it("without server-side TTL, releases when the time is up, or at close()", async () => {
    const backend = withoutTtl();
    const locks = createLocks(backend);
    const lease = await locks.acquire("job", { minHoldMs: 300 });
    await lease.release();
    expect(lease.signal.aborted).toBe(true);
    expect(backend.released).toHaveLength(0);
    await expect.poll(() => backend.released.length, { timeout: 3_000 }).toBe(1);

    const early = await locks.acquire("job", { minHoldMs: 60_000 });
    await early.release();
    expect(backend.released).toHaveLength(1);
    await locks.close();
    expect(backend.released).toHaveLength(2);
  });

  it("without server-side TTL, close() releases a held lease at once, minimum or not", async () => {
    let releasedBeforeClose = -1;
    const backend = withoutTtl();
    backend.close = async () => {
      releasedBeforeClose = backend.released.length;
    };
    const locks = createLocks(backend);
    await locks.acquire("job", { minHoldMs: 60_000 });
    await locks.close();
    expect(releasedBeforeClose).toBe(1);
  });

  it("a release after the minimum frees the key at once", async () => {
    const backend = withoutTtl();
    const locks = createLocks(backend);
    const lease = await locks.acquire("job", { minHoldMs: 1 });
    await new Promise((resolve) => setTimeout(resolve, 5));
    await lease.release();
    expect(backend.released).toHaveLength(1);
    await locks.close();
  });

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY, "60000"])(
    "refuses minHoldMs %s before any call",
    async (minHoldMs) => {
      const backend = recorded();
      const locks = createLocks(backend);
      for (const attempt of [
        () => locks.acquire("k", { minHoldMs: minHoldMs as number }),
        () => locks.tryAcquire("k", { minHoldMs: minHoldMs as number }),
        () => locks.withLock("k", () => 1, { minHoldMs: minHoldMs as number }),
      ]) {
        await expect(attempt()).rejects.toMatchObject({
          code: "INVALID_ARGUMENT",
          message: expect.stringContaining("minHoldMs"),
        });
      }
      expect(backend.tried).toHaveLength(0);
      await locks.close();
    },
  );
});

describe("lease.held", () => {
  it("is false once the local deadline passed, before any timer ran, and aborts the signal", async () => {
    const locks = createLocks(recorded(), { ttlMs: 60_000 });
    const lease = await locks.acquire("paused", { ttlMs: 50, autoExtend: false });
    const signal = lease.signal;
    expect(lease.held).toBe(true);
    // A pause: the event loop is blocked past the deadline, so the watchdog's timer cannot run.
    const until = performance.now() + 80;
    while (performance.now() < until) {}
    expect(signal.aborted).toBe(false);
    expect(lease.held).toBe(false);
    expect(signal.aborted).toBe(true);
    expect((signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    await locks.close();
  });

  it("is false after release", async () => {
    const locks = createLocks(recorded());
    const lease = await locks.acquire("k");
    expect(lease.held).toBe(true);
    await lease.release();
    expect(lease.held).toBe(false);
    await locks.close();
  });
});
