import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createLocks, MIN_TTL_MS } from "../../src/index.js";
import { createRequest, keyDigest, scopedKey } from "../../src/toolkit/index.js";
import { recorded } from "./backend.js";

/** setTimeout's ceiling, the largest ttlMs, timeoutMs or minHoldMs. */
const MAX_TIMER_MS = 2_147_483_647;

/** Expects an INVALID_ARGUMENT whose message matches `message`. */
function refused(run: () => unknown, message: RegExp): void {
  let error: unknown;
  try {
    run();
  } catch (e) {
    error = e;
  }
  expect(error, "expected a refusal").toMatchObject({ code: "INVALID_ARGUMENT" });
  expect((error as Error).message).toMatch(message);
}

async function rejected(outcome: Promise<unknown>, message: RegExp): Promise<void> {
  const error = await outcome.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a rejection").toMatchObject({ code: "INVALID_ARGUMENT" });
  expect((error as Error).message).toMatch(message);
}

describe("keys", () => {
  it("accepts up to 1024 UTF-8 bytes, counted in bytes", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const take = async (key: string): Promise<void> => (await locks.acquire(key)).release();
    await take("k".repeat(1024));
    await rejected(take("k".repeat(1025)), /^key must be at most 1024 UTF-8 bytes, got 1025$/);
    // 341 × 3 bytes = 1023 fit; 342 × 3 = 1026 do not, though only 342 UTF-16 units long.
    await take("中".repeat(341));
    await rejected(take("中".repeat(342)), /at most 1024 UTF-8 bytes, got 1026/);
    // Two-byte characters: 512 fit exactly.
    await take("é".repeat(512));
    await rejected(take(`${"é".repeat(512)}x`), /got 1025/);
    expect(backend.tried.map((r) => r.key.length)).toEqual([1024, 341, 512]);
    await locks.close();
  });

  it("refuses non-strings, empty strings and lone surrogates, naming the argument", async () => {
    const locks = createLocks(recorded());
    await rejected(locks.acquire(42 as never), /^key must be a string, got number$/);
    refused(
      () => createLocks(recorded(), { namespace: null as never }),
      /^namespace must be a string, got null$/,
    );
    await rejected(locks.tryAcquire(["a"] as never), /got array$/);
    await rejected(locks.acquire(""), /^key must not be empty$/);
    await rejected(locks.acquire("k\uD800"), /^key must be well-formed Unicode: .*lone surrogate/);
    await locks.close();
  });

  it("scopes keys by namespace without collisions, and digests the scoped key once per request", async () => {
    expect(scopedKey("a:b", "c")).toBe("3:a:b:c");
    expect(scopedKey("a", "b:c")).toBe("1:a:b:c");
    const digest = keyDigest("ns", "key");
    expect(digest).toEqual(createHash("sha256").update("2:ns:key", "utf8").digest());
    expect(keyDigest("ns", "\u00e9")).toEqual(
      createHash("sha256").update(Buffer.from("2:ns:\u00e9", "utf8")).digest(),
    );
    const request = createRequest({ key: "key", namespace: "ns" });
    expect(request.scoped).toBe("2:ns:key");
    expect(request.digest).toEqual(digest);
    expect(request.digest).toBe(request.digest);
    // What the core hands a backend carries the same.
    const backend = recorded();
    const locks = createLocks(backend, { namespace: "ns" });
    await (await locks.acquire("key")).release();
    expect(backend.tried[0]!.scoped).toBe("2:ns:key");
    expect(backend.tried[0]!.digest).toEqual(digest);
    await locks.close();
  });

  it("builds requests with defaults for tests and tools", () => {
    const request = createRequest({ key: "k" });
    expect(request).toMatchObject({
      key: "k",
      namespace: "default",
      mode: "exclusive",
      limit: 1,
      ttlMs: 30_000,
    });
    expect(request.owner).toMatch(/^[0-9a-f]{32}$/);
    expect(
      createRequest({ key: "k", owner: "me", mode: "shared", limit: 3, ttlMs: 5 }),
    ).toMatchObject({ owner: "me", mode: "shared", limit: 3, ttlMs: 5 });
  });
});

describe("createLocks", () => {
  it("refuses what is not a backend", () => {
    const methods = ["tryAcquire", "extend", "release", "close"] as const;
    for (const method of methods) {
      const backend = { ...recorded(), [method]: undefined };
      refused(() => createLocks(backend), /^backend must be a lock backend/);
    }
    refused(() => createLocks({ ...recorded(), capabilities: null as never }), /^backend /);
    refused(() => createLocks({ ...recorded(), capabilities: "all" as never }), /^backend /);
    refused(() => createLocks(null as never), /^backend /);
    refused(() => createLocks("redis" as never), /^backend /);
  });

  it("refuses bad options and names them", () => {
    refused(() => createLocks(recorded(), null as never), /^options must be an object, got null$/);
    refused(() => createLocks(recorded(), 5 as never), /^options must be an object, got number$/);
    refused(() => createLocks(recorded(), { namespace: "" }), /^namespace must not be empty$/);
    refused(
      () => createLocks(recorded(), { namespace: "n".repeat(257) }),
      /^namespace must be at most 256 UTF-8 bytes/,
    );
    expect(createLocks(recorded(), { namespace: "n".repeat(256) }).namespace).toHaveLength(256);
    refused(
      () => createLocks(recorded(), { autoExtend: "yes" as never }),
      /^autoExtend must be a boolean, got string$/,
    );
    refused(() => createLocks(recorded(), { ttlMs: 9 }), /^ttlMs must be at least 10 ms/);
    refused(
      () => createLocks(recorded({}, { minTtlMs: 2_000 }), { ttlMs: 1_999 }),
      /^ttlMs must be at least 2000 ms, the shortest lease this backend can honour, got 1999$/,
    );
  });

  it('uses namespace "default", ttlMs 30 000 and autoExtend by default', async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    expect(locks.namespace).toBe("default");
    expect(locks.backend).toBe(backend);
    const lease = await locks.acquire("k");
    expect(backend.tried[0]).toMatchObject({
      key: "k",
      namespace: "default",
      mode: "exclusive",
      limit: 1,
      ttlMs: 30_000,
    });
    expect(backend.tried[0]!.owner).toMatch(/^[0-9a-f]{32}$/);
    await lease.release();
    await locks.close();
  });

  it("takes ttlMs from the client's default and from the acquire, rounded up", async () => {
    const backend = recorded();
    const locks = createLocks(backend, { ttlMs: 5_000.2, namespace: "n" });
    await (await locks.acquire("a")).release();
    await (await locks.acquire("b", { ttlMs: 10.5 })).release();
    await (await locks.acquire("c", { ttlMs: MIN_TTL_MS })).release();
    expect(backend.tried.map((r) => [r.namespace, r.ttlMs])).toEqual([
      ["n", 5_001],
      ["n", 11],
      ["n", 10],
    ]);
    await locks.close();
  });
});

describe("acquire options", () => {
  const semaphore = (): ReturnType<typeof recorded> =>
    recorded({}, { semaphore: true, shared: true });

  it.each<[string, object, RegExp]>([
    ["ttlMs 0", { ttlMs: 0 }, /^ttlMs must be a positive finite number of milliseconds, got 0$/],
    ["ttlMs -1", { ttlMs: -1 }, /^ttlMs must be a positive finite number .*got -1$/],
    ["ttlMs NaN", { ttlMs: Number.NaN }, /got NaN$/],
    ["ttlMs Infinity", { ttlMs: Number.POSITIVE_INFINITY }, /got Infinity$/],
    ["ttlMs string", { ttlMs: "10" }, /^ttlMs must be a positive .*got "10"$/],
    ["ttlMs below floor", { ttlMs: 9.9 }, /^ttlMs must be at least 10 ms.*got 9\.9$/],
    ["ttlMs too long", { ttlMs: MAX_TIMER_MS + 1 }, /^ttlMs must be at most 2147483647, got/],
    ["mode", { mode: "read" }, /^mode must be "exclusive" or "shared", got "read"$/],
    ["limit 0", { limit: 0 }, /^limit must be an integer >= 1, got 0$/],
    ["limit 1.5", { limit: 1.5 }, /^limit must be an integer >= 1, got 1\.5$/],
    ["limit string", { limit: "2" }, /^limit must be an integer >= 1, got "2"$/],
    ["limit huge", { limit: 2 ** 53 }, /^limit must be an integer >= 1/],
    [
      "limit with shared",
      { limit: 2, mode: "shared" },
      /^limit > 1 cannot be combined with mode "shared"$/,
    ],
    ["signal", { signal: { aborted: false } }, /^signal must be an AbortSignal, got object$/],
    ["signal null", { signal: null }, /^signal must be an AbortSignal, got null$/],
    ["autoExtend", { autoExtend: 1 }, /^autoExtend must be a boolean, got number$/],
    [
      "timeoutMs -1",
      { timeoutMs: -1 },
      /^timeoutMs must be a number >= 0 \(or Infinity\), got -1$/,
    ],
    ["timeoutMs NaN", { timeoutMs: Number.NaN }, /^timeoutMs must be .*got NaN$/],
    ["timeoutMs string", { timeoutMs: "5" }, /^timeoutMs must be .*got "5"$/],
    ["minHoldMs -1", { minHoldMs: -1 }, /^minHoldMs must be a finite number >= 0, got -1$/],
    ["minHoldMs Infinity", { minHoldMs: Number.POSITIVE_INFINITY }, /^minHoldMs must be/],
    ["minHoldMs string", { minHoldMs: "1" }, /^minHoldMs must be a finite number >= 0, got "1"$/],
    [
      "minHoldMs too long",
      { minHoldMs: MAX_TIMER_MS + 1 },
      /^minHoldMs must be at most 2147483647/,
    ],
    ["unknown option", { ttl: 5 }, /^options\.ttl is not a known option$/],
    ["bigint shown", { limit: 2n }, /^limit must be an integer >= 1, got 2$/],
    ["boolean shown", { ttlMs: true }, /got true$/],
    ["long string cut", { mode: "x".repeat(50) }, /got "x{40}…"$/],
    ["function named", { ttlMs: () => 1 }, /got function$/],
  ])("refuses %s before any call", async (_name, options, message) => {
    const backend = semaphore();
    const locks = createLocks(backend);
    await rejected(locks.acquire("k", options), message);
    await rejected(
      locks.withLock("k", () => 1, options),
      message,
    );
    expect(backend.tried).toHaveLength(0);
    await locks.close();
  });

  it("refuses options that are not an object, and timeoutMs on tryAcquire with a hint", async () => {
    const locks = createLocks(recorded());
    await rejected(locks.acquire("k", null as never), /^options must be an object, got null$/);
    await rejected(locks.acquire("k", "fast" as never), /got string$/);
    await rejected(
      locks.tryAcquire("k", { timeoutMs: 5 } as never),
      /^options\.timeoutMs is not a known option \(tryAcquire never waits; use acquire\)$/,
    );
    await rejected(locks.acquire("", {}), /^key must not be empty$/);
    await locks.close();
  });

  it("refuses what the backend does not support", async () => {
    const locks = createLocks(recorded());
    await rejected(
      locks.acquire("k", { mode: "shared" }),
      /^mode "shared" is not supported by this backend$/,
    );
    await rejected(
      locks.acquire("k", { limit: 2 }),
      /^limit > 1 \(semaphore\) is not supported by this backend$/,
    );
    await locks.close();
  });

  it("passes valid options through to the backend", async () => {
    const backend = semaphore();
    const locks = createLocks(backend);
    const controller = new AbortController();
    const shared = await locks.acquire("s", { mode: "shared", signal: controller.signal });
    const counted = await locks.tryAcquire("c", { limit: 3, ttlMs: MAX_TIMER_MS, minHoldMs: 0 });
    await locks.acquire("f", { timeoutMs: Number.POSITIVE_INFINITY });
    expect(shared.mode).toBe("shared");
    expect(counted?.mode).toBe("exclusive");
    expect(backend.tried.map((r) => [r.key, r.mode, r.limit, r.ttlMs])).toEqual([
      ["s", "shared", 1, 30_000],
      ["c", "exclusive", 3, MAX_TIMER_MS],
      ["f", "exclusive", 1, 30_000],
    ]);
    await locks.close();
  });

  it("refuses a signal that already aborted with its reason, before any call", async () => {
    const backend = recorded();
    const locks = createLocks(backend);
    const reason = new Error("gave up");
    await expect(locks.acquire("k", { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(locks.tryAcquire("k", { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(backend.tried).toHaveLength(0);
    await locks.close();
  });

  it("refuses withLock without a function", async () => {
    const locks = createLocks(recorded());
    await rejected(locks.withLock("k", "run" as never), /^fn must be a function, got string$/);
    await locks.close();
  });
});
