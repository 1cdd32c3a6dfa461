import { createLockManager, createLocks } from "@locks/core";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { webLocksTests } from "../../core/test/web-locks-wpt.js";
import { redisBackend } from "../src/index.js";
import { freshNamespace, startWorker } from "./helpers.js";

const url = inject("redisUrl");

// The W3C Web Locks cases (see the suite); each client opens its own connections, as another process would.
webLocksTests({
  name: "redis",
  open: (options) => createLocks(redisBackend({ url }), options),
  ttlMs: 600,
});

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
