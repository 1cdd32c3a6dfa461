/*
 * Semaphore limits, in the isolate table (with and without TTL) and in the
 * SharedArrayBuffer table: a request whose limit differs from the one the
 * key's current holders use is refused (as `consul lock -n` does), waiting
 * ones too, and inspect() reports every holder's real mode and the limit.
 */
import { randomBytes } from "node:crypto";
import { type Backend, createLocks, type Locks } from "@locks/core";
import { createRequest, type LockRequest, type RequestFields } from "@locks/core/backend";
import { afterEach, describe, expect, it } from "vitest";
import { createSharedLockTable, threadBackend } from "../src/index.js";
import { tableIdle, tableWords } from "./fixtures/table-words.js";

const opened: Array<Locks | Backend> = [];
afterEach(async () => {
  await Promise.allSettled(opened.map((o) => o.close()));
  opened.length = 0;
});

const newNamespace = (): string => `limits-${randomBytes(6).toString("hex")}`;

function request(namespace: string, key: string, extra: Partial<RequestFields> = {}): LockRequest {
  return createRequest({ key, namespace, ...extra });
}

function codeOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => (value === null ? null : "granted"),
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

const table = createSharedLockTable({ slots: 64 });
const configurations: Array<[string, () => Backend]> = [
  ["in-isolate", () => threadBackend()],
  ["in-isolate with ttl", () => threadBackend({ ttl: true })],
  ["shared table", () => threadBackend({ table })],
];

describe.each(configurations)("%s", (_name, make) => {
  function client(namespace: string): Locks {
    const locks = createLocks(make(), { namespace });
    opened.push(locks);
    return locks;
  }

  it("refuses another limit while two limit-2 holders hold the key, acquire and tryAcquire", async () => {
    const namespace = newNamespace();
    const [a, b, c] = [client(namespace), client(namespace), client(namespace)];
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    expect(await codeOf(c.tryAcquire("pool", { limit: 3 }))).toEqual(mismatch(3, 2));
    expect(await codeOf(c.acquire("pool", { limit: 3, timeoutMs: 20_000 }))).toEqual(
      mismatch(3, 2),
    );
    expect(await codeOf(c.acquire("pool", { timeoutMs: 20_000 }))).toEqual(mismatch(1, 2));
    expect(await codeOf(c.tryAcquire("pool", { mode: "shared" }))).toEqual(mismatch(1, 2));
    expect(await c.tryAcquire("pool", { limit: 2 })).toBeNull();
    await slots[0]!.release();
    expect(await codeOf(c.tryAcquire("pool", { limit: 3 }))).toEqual(mismatch(3, 2));
    await slots[1]!.release();
    const three = await c.acquire("pool", { limit: 3, timeoutMs: 10_000 });
    expect(await codeOf(a.tryAcquire("pool", { limit: 2 }))).toEqual(mismatch(2, 3));
    await three.release();
    expect(await codeOf(a.tryAcquire("pool", { limit: 2 }))).toBe("granted");
  });

  it("refuses a semaphore while a writer (limit 1) holds the key; readers and writers wait", async () => {
    const namespace = newNamespace();
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
    await reader.release();
  });

  it("inspect() reports each holder's real mode and the key's limit", async () => {
    const namespace = newNamespace();
    const [a, b] = [client(namespace), client(namespace)];
    const backend = make();
    opened.push(backend);
    expect(await backend.inspect!(request(namespace, "pool"))).toEqual({ holders: [] });
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    const pool = await backend.inspect!(request(namespace, "pool"));
    expect(pool).toMatchObject({ limit: 2 });
    expect(pool.holders.map((h) => h.mode)).toEqual(["exclusive", "exclusive"]);
    await Promise.all(slots.map((s) => s.release()));

    const readers = [
      await a.acquire("doc", { mode: "shared" }),
      await b.acquire("doc", { mode: "shared" }),
    ];
    const doc = await backend.inspect!(request(namespace, "doc"));
    expect(doc).toMatchObject({ limit: 1 });
    expect(doc.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    await Promise.all(readers.map((r) => r.release()));
    expect(await backend.inspect!(request(namespace, "doc"))).toEqual({ holders: [] });
  });
});

describe("waiters", () => {
  it("in-isolate: a waiter queued while the holders' TTL had passed is refused once the key is taken with another limit", async () => {
    const namespace = newNamespace();
    const backend = threadBackend({ ttl: true });
    opened.push(backend);
    const ttlMs = 50;
    for (let i = 0; i < 2; i++) {
      const attempt = await backend.tryAcquire(request(namespace, "k", { limit: 2, ttlMs }));
      expect(attempt.granted).toBe(true);
    }
    const signal = AbortSignal.timeout(10_000);
    const first = backend.acquire!(request(namespace, "k", { limit: 2, ttlMs: 30_000 }), {
      signal,
    });
    // Keep the expiry timer from running: both holds' TTL passes before the next waiter arrives.
    const until = performance.now() + ttlMs + 20;
    while (performance.now() < until) {
      // busy: the event loop must not turn here
    }
    const second = codeOf(backend.acquire!(request(namespace, "k"), { signal }));
    expect(await codeOf(first)).toBe("granted");
    // Without the refusal it would wait (beside a holder of another limit) until the signal's timeout.
    expect(await second).toEqual(mismatch(1, 2));
  });

  it("in-isolate: holders whose TTL passed do not keep their limit; the next holder's limit is the key's", async () => {
    const namespace = newNamespace();
    const backend = threadBackend({ ttl: true });
    opened.push(backend);
    const ttlMs = 30;
    const expired = await backend.tryAcquire(request(namespace, "k", { limit: 3, ttlMs }));
    expect(expired.granted).toBe(true);
    const passed = performance.now() + ttlMs + 5;
    while (performance.now() < passed) await new Promise((r) => setTimeout(r, ttlMs));
    // Nobody looked at the key since: the expired hold is still listed.
    const two = [
      await codeOf(backend.tryAcquire(request(namespace, "k", { limit: 2 }))),
      await codeOf(backend.tryAcquire(request(namespace, "k", { limit: 2 }))),
    ];
    expect(two).toEqual(["granted", "granted"]);
    expect(await codeOf(backend.tryAcquire(request(namespace, "k", { limit: 3 })))).toEqual(
      mismatch(3, 2),
    );
    const status = await backend.inspect!(request(namespace, "k"));
    expect(status).toMatchObject({ limit: 2 });
    expect(status.holders).toHaveLength(2);
  });

  it("shared table: a waiting writer is refused when the key is taken with another limit first", async () => {
    const own = createSharedLockTable({ slots: 4 });
    const namespace = newNamespace();
    const a = threadBackend({ table: own });
    const b = threadBackend({ table: own });
    opened.push(a, b);
    const reader = request(namespace, "k", { mode: "shared" });
    const readerAttempt = await a.tryAcquire(reader);
    expect(readerAttempt.granted).toBe(true);
    // A writer (limit 1) waits behind the reader.
    const waiting = createLocks(b, { namespace });
    opened.push(waiting);
    const writer = codeOf(waiting.acquire("k", { timeoutMs: 10_000 }));
    const words = tableWords(own, namespace, "k");
    const deadline = performance.now() + 10_000;
    while (words.writers() === 0) {
      if (performance.now() > deadline) throw new Error("the writer never registered");
      await new Promise((r) => setImmediate(r));
    }
    await a.release(reader, readerAttempt.granted ? readerAttempt.hold : undefined);
    // Before the writer wakes, a semaphore takes the freed key with limit 3.
    const semaphore = request(namespace, "k", { limit: 3 });
    const taken = await a.tryAcquire(semaphore);
    expect(taken.granted).toBe(true);
    expect(await writer).toEqual(mismatch(1, 3));
    await a.release(semaphore, taken.granted ? taken.hold : undefined);
    expect(tableIdle(own)).toEqual([]);
  });
});
