import { createLockManager, createLocks } from "@locks/core";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { freshNamespace, startWorker } from "./helpers.js";

const url = inject("redisUrl");

// The Web Locks cases every backend runs are the conformance suite's "Web Locks" group; this
// one holds the lock from another OS process, through redis.
describe("redis Web Locks against another OS process", () => {
  function manager(namespace: string) {
    const locks = createLocks(redisBackend({ url }), { namespace });
    onTestFinished(() => locks.close());
    return createLockManager(locks);
  }

  it("waits for a holder in another process; a steal evicts it (lease lost, higher token); a SIGKILLed holder frees it at its TTL", async () => {
    const ns = freshNamespace();
    const worker = await startWorker({ url }, ns);
    const m = manager(ns);
    const first = await worker.acquire("res", { ttlMs: 1_000 });
    expect(await m.request("res", { ifAvailable: true }, (lock) => lock)).toBeNull();
    const waiting = m.request("res", (lock) => lock?.fencingToken);
    await worker.release(first);
    expect(await waiting).toBeGreaterThan(first.token);

    const second = await worker.acquire("res", { ttlMs: 1_000 });
    const token = await m.request("res", { steal: true }, (lock) => lock?.fencingToken);
    expect(token).toBeGreaterThan(second.token);
    expect(await worker.next("lost", 5_000)).toMatchObject({ key: "res", code: "LOCK_LOST" });

    await worker.acquire("res", { ttlMs: 600 });
    worker.kill("SIGKILL");
    expect(await m.request("res", (lock) => lock?.name)).toBe("res");
  });
});
