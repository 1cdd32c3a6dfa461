/*
 * Semaphore limits on the file system: a request whose limit differs from the
 * one the key's current holders use is refused (as `consul lock -n` does),
 * and inspect() reports every holder's real mode and the key's limit.
 */
import { createLocks, type Locks } from "@locks/core";
import { createRequest } from "@locks/core/backend";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { fileBackend } from "../src/index.js";
import { randomNamespace, tempDirectory } from "./helpers.js";

const dir = tempDirectory("limits");
afterAll(() => dir.remove());

/** A client over its own backend instance (as another process would have). */
function client(namespace: string): Locks {
  const locks = createLocks(fileBackend({ directory: dir.path }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

function codeOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => "granted",
    (error: { code?: unknown; message?: unknown }) => ({
      code: error.code,
      message: error.message,
    }),
  );
}

const mismatch = (requested: number, current: number) => ({
  code: "INVALID_ARGUMENT",
  message: expect.stringMatching(
    new RegExp(`^limit ${requested} differs from the limit ${current} `),
  ) as unknown,
});

describe("a limit that differs from the current holders'", () => {
  it("is refused while two limit-2 holders hold the key: tryAcquire, acquire and waiters", async () => {
    const namespace = randomNamespace();
    const [a, b, c] = [client(namespace), client(namespace), client(namespace)];
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    expect(await codeOf(c.tryAcquire("pool", { limit: 3 }))).toEqual(mismatch(3, 2));
    // A waiting acquire is refused at once, not after its timeout.
    const started = performance.now();
    expect(await codeOf(c.acquire("pool", { limit: 3, timeoutMs: 20_000 }))).toEqual(
      mismatch(3, 2),
    );
    expect(performance.now() - started).toBeLessThan(10_000);
    expect(await codeOf(c.acquire("pool", { timeoutMs: 20_000 }))).toEqual(mismatch(1, 2));
    expect(await codeOf(c.tryAcquire("pool", { mode: "shared" }))).toEqual(mismatch(1, 2));
    // The same limit just waits its turn.
    expect(await c.tryAcquire("pool", { limit: 2 })).toBeNull();
    await slots[0]!.release();
    // One limit-2 holder left: still limit 2.
    expect(await codeOf(c.tryAcquire("pool", { limit: 3 }))).toEqual(mismatch(3, 2));
    await slots[1]!.release();
    // Free: any limit may take it, and then sets it.
    const three = await c.acquire("pool", { limit: 3, timeoutMs: 10_000 });
    expect(await codeOf(a.tryAcquire("pool", { limit: 2 }))).toEqual(mismatch(2, 3));
    await three.release();
  });

  it("is refused while an exclusive holder (limit 1) holds the key; readers and writers just wait", async () => {
    const namespace = randomNamespace();
    const [a, b] = [client(namespace), client(namespace)];
    const writer = await a.acquire("door");
    expect(await codeOf(b.tryAcquire("door", { limit: 2 }))).toEqual(mismatch(2, 1));
    expect(await codeOf(b.acquire("door", { limit: 2, timeoutMs: 20_000 }))).toEqual(
      mismatch(2, 1),
    );
    expect(await b.tryAcquire("door")).toBeNull();
    expect(await b.tryAcquire("door", { mode: "shared" })).toBeNull();
    await writer.release();
    const reader = await b.acquire("door", { mode: "shared", timeoutMs: 10_000 });
    expect(await codeOf(a.tryAcquire("door", { limit: 2 }))).toEqual(mismatch(2, 1));
    expect(await a.tryAcquire("door")).toBeNull();
    await reader.release();
  });

  it("a waiter is refused once the key it waits for is taken with another limit", async () => {
    const namespace = randomNamespace();
    const [a, b, c] = [client(namespace), client(namespace), client(namespace)];
    const writer = await a.acquire("handover");
    // Waits (same limit as the writer's)...
    const waiting = codeOf(b.acquire("handover", { timeoutMs: 30_000 }));
    await writer.release();
    // ...while a semaphore may win the race for the freed key. Whoever wins, the other side
    // must never end up holding beside it: either the waiter got it, or it was refused.
    const semaphore = await codeOf(c.acquire("handover", { limit: 2, timeoutMs: 30_000 }));
    const outcome = await waiting;
    if (semaphore === "granted") {
      expect(outcome === "granted" ? "both granted" : outcome).toEqual(mismatch(1, 2));
    } else {
      expect(outcome).toBe("granted");
      expect(semaphore).toEqual(mismatch(2, 1));
    }
    await Promise.all([a.close(), b.close(), c.close()]);
  });
});

describe("inspect()", () => {
  it("reports semaphore holders as exclusive with the key's limit, readers as shared with limit 1", async () => {
    const namespace = randomNamespace();
    const [a, b] = [client(namespace), client(namespace)];
    const backend = fileBackend({ directory: dir.path });
    onTestFinished(() => backend.close());
    const ref = (key: string) => createRequest({ key, namespace });
    expect(await backend.inspect!(ref("pool"))).toEqual({ holders: [] });

    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    const pool = await backend.inspect!(ref("pool"));
    expect(pool.limit).toBe(2);
    expect(pool.holders.map((h) => h.mode)).toEqual(["exclusive", "exclusive"]);
    await Promise.all(slots.map((s) => s.release()));

    const readers = [
      await a.acquire("doc", { mode: "shared" }),
      await b.acquire("doc", { mode: "shared" }),
    ];
    const doc = await backend.inspect!(ref("doc"));
    expect(doc).toMatchObject({ limit: 1 });
    expect(doc.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    await Promise.all(readers.map((r) => r.release()));

    const writer = await a.acquire("doc");
    const one = await backend.inspect!(ref("doc"));
    expect(one).toMatchObject({ limit: 1 });
    expect(one.holders).toEqual([
      expect.objectContaining({ mode: "exclusive", fencingToken: writer.fencingToken }),
    ]);
    await writer.release();
  });
});
