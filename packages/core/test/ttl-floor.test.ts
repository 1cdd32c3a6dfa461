import { describe, expect, it } from "vitest";
import { createLocks, MIN_TTL_MS } from "../src/index.js";
import { recorded } from "./unit/backend.js";

function withFloor(minTtlMs: number) {
  return recorded({}, { minTtlMs });
}

describe("the ttlMs floor", () => {
  it("is the backend's minTtlMs on every path, refused before any call", async () => {
    const backend = withFloor(1_000);
    expect(() => createLocks(backend, { ttlMs: 999 })).toThrow(/ttlMs must be at least 1000 ms/);
    const locks = createLocks(backend, { ttlMs: 60_000 });
    for (const attempt of [
      () => locks.acquire("k", { ttlMs: 999 }),
      () => locks.tryAcquire("k", { ttlMs: 999 }),
      () => locks.withLock("k", () => 1, { ttlMs: 999 }),
    ]) {
      await expect(attempt()).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    }
    expect(backend.tried).toHaveLength(0);
    const lease = await locks.acquire("k", { ttlMs: 1_000 });
    await expect(lease.extend(999)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(lease.signal.aborted).toBe(false);
    await lease.extend(1_000);
    await locks.close();
  });

  it("never goes below the core's own floor, whatever the backend declares", async () => {
    const locks = createLocks(withFloor(1));
    for (const ttlMs of [1, 2, 3, MIN_TTL_MS - 1]) {
      await expect(locks.tryAcquire("k", { ttlMs })).rejects.toMatchObject({
        code: "INVALID_ARGUMENT",
      });
    }
    // At the floor, a prompt grant is accepted, not refused as arriving too late.
    const lease = await locks.tryAcquire("k", { ttlMs: MIN_TTL_MS, autoExtend: false });
    expect(lease).not.toBeNull();
    await lease!.release();
    await locks.close();
  });
});
