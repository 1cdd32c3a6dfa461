import { describe, expect, it } from "vitest";
import { createLocks } from "../src/index.js";
import { backendUnavailable } from "../src/toolkit/index.js";
import { abortReason, recorded } from "./unit/backend.js";

describe("leases and the watchdog", () => {
  it("declares the lease lost at its local deadline while an extension hangs", async () => {
    const locks = createLocks(recorded({ extend: () => new Promise<boolean>(() => {}) }));
    const lease = await locks.acquire("k", { ttlMs: 150 });
    // On the monotonic clock's epoch view, as expiresAt is (Date.now() drifts from it).
    const granted = performance.timeOrigin + performance.now();
    // Deadline = ttl - drift (1% + 2 ms): never later than the TTL.
    expect(lease.expiresAt!).toBeLessThanOrEqual(granted + 150 - 3);
    const reason = (await abortReason(lease.signal)) as { code?: string };
    expect(reason.code).toBe("LOCK_LOST");
    expect(performance.timeOrigin + performance.now()).toBeGreaterThanOrEqual(lease.expiresAt! - 1);
    await locks.close();
  });

  it("keeps extending through a transient error", async () => {
    let calls = 0;
    const locks = createLocks(
      recorded({
        async extend() {
          calls++;
          if (calls === 1) throw backendUnavailable("scripted", new Error("blip"));
          return true;
        },
      }),
    );
    const lease = await locks.acquire("k", { ttlMs: 150 });
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect(calls).toBeGreaterThanOrEqual(3);
    expect(lease.signal.aborted).toBe(false);
    await locks.close();
  });

  it("marks the lease lost when an extension is refused", async () => {
    const locks = createLocks(recorded({ extend: async () => false }));
    const lease = await locks.acquire("k", { ttlMs: 90 });
    expect(((await abortReason(lease.signal)) as { code?: string }).code).toBe("LOCK_LOST");
    await expect(lease.extend()).rejects.toMatchObject({ code: "LOCK_LOST" });
    await lease.release();
    await locks.close();
  });

  it("refuses and releases a grant that arrived after its validity", async () => {
    const backend = recorded({
      async tryAcquire() {
        await new Promise((resolve) => setTimeout(resolve, 80));
        return { granted: true, fencingToken: 1n };
      },
    });
    const locks = createLocks(backend);
    await expect(locks.acquire("late", { ttlMs: 50, timeoutMs: 0 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    await locks.close();
    expect(backend.released.map((r) => r.key)).toContain("late");
  });

  it("dates a grant from the store's queue by its validUntil, not by the start of the wait", async () => {
    const backend = recorded({
      async tryAcquire() {
        return { granted: false };
      },
      async acquire() {
        // Granted after a wait longer than the TTL: the lease started at the grant.
        await new Promise((resolve) => setTimeout(resolve, 120));
        return { granted: true, fencingToken: 9n, validUntil: performance.now() + 90 };
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("queued", { ttlMs: 100, autoExtend: false });
    expect(lease.fencingToken).toBe(9n);
    expect(lease.signal.aborted).toBe(false);
    await locks.close();
  });

  it("bounds a slow first attempt by timeoutMs and signal, and hands back its late grant", async () => {
    const backend = recorded({
      async tryAcquire(req) {
        backend.tried.push(req);
        await new Promise((resolve) => setTimeout(resolve, 300));
        return { granted: true, fencingToken: 1n };
      },
    });
    const locks = createLocks(backend, { ttlMs: 60_000 });
    const started = performance.now();
    await expect(locks.acquire("slow", { timeoutMs: 50 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    expect(performance.now() - started).toBeLessThan(250);
    const reason = new Error("stop");
    const controller = new AbortController();
    const aborted = locks.tryAcquire("slow", { signal: controller.signal });
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Both late grants were released by their owners.
    const owners = backend.tried.map((r) => r.owner).sort();
    expect(backend.released.map((r) => r.owner).sort()).toEqual(owners);
    await locks.close();
  });

  it("never reports an acquire whose outcome is unknown, and cleans it up by owner", async () => {
    const failure = backendUnavailable("scripted", new Error("connection reset"));
    const backend = recorded({
      async tryAcquire() {
        throw failure;
      },
    });
    const locks = createLocks(backend);
    await expect(locks.acquire("unknown")).rejects.toBe(failure);
    await locks.close();
    expect(backend.released).toHaveLength(1);
    expect(backend.released[0]!.key).toBe("unknown");
  });

  it("aborts one lease or all of them on a loss the backend reports", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { autoExtend: false, ttlMs: 60_000 });
    const a = await locks.acquire("a");
    const b = await locks.acquire("b");
    backend.host!.lost(backend.holders.get("a"), "key deleted");
    expect(a.signal.aborted).toBe(true);
    expect(b.signal.aborted).toBe(false);
    backend.host!.lostAll("session closed");
    expect((b.signal.reason as { code?: string; message: string }).code).toBe("LOCK_LOST");
    expect((b.signal.reason as { message: string }).message).toMatch(/session closed/);
    await locks.close();
  });

  it("closes through await using", async () => {
    const backend = recorded();
    let closed = false;
    backend.close = async () => {
      closed = true;
    };
    {
      await using locks = createLocks(backend);
      await (await locks.acquire("k")).release();
    }
    expect(closed).toBe(true);
  });
});
