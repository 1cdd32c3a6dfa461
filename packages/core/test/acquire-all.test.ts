import { describe, expect, it } from "vitest";
import { createLocks, type Locks } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";
import { recorded } from "./unit/backend.js";

function pair(): [Locks, Locks] {
  const namespace = `all-${Math.random()}`;
  return [createLocks(memoryBackend(), { namespace }), createLocks(memoryBackend(), { namespace })];
}

describe("acquireAll", () => {
  it("two clients taking overlapping sets in opposite orders never deadlock", async () => {
    const [a, b] = pair();
    let held = 0;
    const loop = async (locks: Locks, keys: string[]): Promise<void> => {
      for (let i = 0; i < 200; i++) {
        await using all = await locks.acquireAll(keys, { timeoutMs: 5_000 });
        held++;
        expect(all.leases.map((l) => l.key)).toEqual(keys);
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    await Promise.all([loop(a, ["a", "b"]), loop(b, ["b", "a"]), loop(a, ["c", "b", "a"])]);
    expect(held).toBe(600);
    await Promise.all([a.close(), b.close()]);
  });

  it("takes all or none within one timeoutMs", async () => {
    const [a, b] = pair();
    const blocker = await b.acquire("acct:2");
    await expect(a.acquireAll(["acct:1", "acct:2"], { timeoutMs: 100 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    // The key taken before the timeout was handed back.
    const first = await b.tryAcquire("acct:1");
    expect(first).not.toBeNull();
    await Promise.all([first!.release(), blocker.release()]);
    await Promise.all([a.close(), b.close()]);
  });

  it("its signal aborts when any lease is lost, and release() frees every key", async () => {
    const [a, b] = pair();
    const all = await a.acquireAll(["x", "y"]);
    expect(all.signal.aborted).toBe(false);
    await all.leases[1]!.release();
    expect(all.signal.aborted).toBe(true);
    expect((all.signal.reason as { code?: string }).code).toBe("LOCK_RELEASED");
    await all.release();
    await all.release();
    for (const key of ["x", "y"]) {
      const lease = await b.tryAcquire(key);
      expect(lease, key).not.toBeNull();
      await lease!.release();
    }
    await Promise.all([a.close(), b.close()]);
  });

  it.each<[string, unknown, unknown]>([
    ["an empty set", [], undefined],
    ["not an array", "a", undefined],
    ["a repeated key", ["a", "b", "a"], undefined],
    ["a bad key", ["a", ""], undefined],
    ["a bad option", ["a"], { ttlMs: -1 }],
    ["minHoldMs", ["a"], { minHoldMs: 10 }],
  ])("refuses %s before any I/O", async (_label, keys, options) => {
    const backend = recorded();
    const locks = createLocks(backend);
    await expect(
      locks.acquireAll(keys as string[], options as { ttlMs: number }),
    ).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(backend.tried).toHaveLength(0);
    await locks.close();
  });
});
