/*
 * Holder labels, inspect and forceRelease within one thread, on the in-thread
 * table and on a shared table: between two backend instances, so that an
 * evicted lease is told through its own client's backend.
 */
import { randomBytes } from "node:crypto";
import { type Backend, createLocks, type Locks } from "@locks/core";
import { afterEach, describe, expect, it } from "vitest";
import { createSharedLockTable, threadBackend } from "../src/index.js";
import { tableIdle } from "./fixtures/table-words.js";
import { until } from "./fixtures/until.js";

const opened: Locks[] = [];
afterEach(async () => {
  await Promise.allSettled(opened.map((l) => l.close()));
  opened.length = 0;
});

const newNamespace = (): string => `coord-${randomBytes(6).toString("hex")}`;

function client(backend: Backend, namespace: string): Locks {
  const locks = createLocks(backend, { namespace });
  opened.push(locks);
  return locks;
}

const kinds = [
  { name: "in-thread", make: () => threadBackend(), ttl: false },
  { name: "in-thread ttl", make: () => threadBackend({ ttl: true }), ttl: true },
  {
    name: "shared table",
    make: (
      (table) => () =>
        threadBackend({ table })
    )(createSharedLockTable({ slots: 16 })),
    ttl: false,
  },
] as const;

describe.each(kinds)("$name", ({ make, ttl }) => {
  it("inspect from another instance reports the label, mode, token and expiry of each holder", async () => {
    const namespace = newNamespace();
    const [a, b] = [client(make(), namespace), client(make(), namespace)];
    const label = "reporter 'n°1'\n👍";
    const lease = await a.acquire("k", { holder: label, ttlMs: 5_000 });
    const state = await b.inspect("k");
    expect(state.key).toBe("k");
    expect(state.limit, "only a semaphore has one").toBeUndefined();
    expect(state.holders).toHaveLength(1);
    expect(state.holders[0]).toMatchObject({
      holder: label,
      mode: "exclusive",
      fencingToken: lease.fencingToken,
    });
    if (ttl) expect(state.holders[0]!.expiresAt).toBeGreaterThan(Date.now());
    else expect(state.holders[0]!.expiresAt).toBeUndefined();
    const slots = [
      await a.acquire("pool", { limit: 3, holder: "s1" }),
      await b.acquire("pool", { limit: 3 }),
    ];
    const pool = await a.inspect("pool");
    expect(pool.limit).toBe(3);
    expect(pool.holders.map((h) => [h.holder, h.mode])).toEqual([
      ["s1", "exclusive"],
      [undefined, "exclusive"],
    ]);
    await Promise.all([lease.release(), ...slots.map((s) => s.release())]);
    expect(await b.inspect("k")).toEqual({ key: "k", holders: [], limit: undefined });
  });

  it("forceRelease from another instance: the holder's own client is told, its extend fails, the waiter gets a higher token", async () => {
    const namespace = newNamespace();
    const [a, b] = [client(make(), namespace), client(make(), namespace)];
    const evicted = await a.acquire("k", { holder: "a" });
    const waiting = b.acquire("k", { timeoutMs: 10_000, holder: "b" });
    expect(await b.forceRelease("k")).toBe(true);
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(evicted.fencingToken);
    // In one thread the loss is reported at once; through a shared table, when the eviction word wakes.
    await until(() => evicted.signal.aborted, "the evicted lease's signal aborts");
    expect((evicted.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    await expect(evicted.extend()).rejects.toMatchObject({ code: "LOCK_LOST" });
    // The evicted lease's release frees nothing of the next holder.
    await evicted.release();
    expect((await a.inspect("k")).holders.map((h) => h.holder)).toEqual(["b"]);
    expect(await a.tryAcquire("k")).toBeNull();
    await next.release();
    expect(await a.forceRelease("k")).toBe(false);
  });

  it("forceRelease frees every reader and every semaphore slot", async () => {
    const namespace = newNamespace();
    const [a, b] = [client(make(), namespace), client(make(), namespace)];
    const readers = [
      await a.acquire("doc", { mode: "shared" }),
      await b.acquire("doc", { mode: "shared" }),
    ];
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    const top = slots[1]!.fencingToken;
    expect(await a.forceRelease("doc")).toBe(true);
    expect(await b.forceRelease("pool")).toBe(true);
    for (const lease of [...readers, ...slots]) {
      await until(() => lease.signal.aborted, "every evicted lease is told");
    }
    const writer = await b.tryAcquire("doc");
    expect(writer!.fencingToken).toBeGreaterThan(top);
    const slot = await a.tryAcquire("pool", { limit: 5 });
    expect(slot).not.toBeNull();
    await Promise.all([writer!.release(), slot!.release()]);
    await Promise.all([...readers, ...slots].map((l) => l.release()));
    expect((await a.inspect("doc")).holders).toEqual([]);
  });
});

describe("shared table: hold records", () => {
  it("holds: when every record is in use, the next grant waits for one to be freed", async () => {
    const table = createSharedLockTable({ slots: 4, holds: 2 });
    const locks = client(threadBackend({ table }), newNamespace());
    const first = await locks.acquire("a");
    const second = await locks.acquire("b", { mode: "shared" });
    expect(await locks.tryAcquire("c")).toBeNull();
    const waiting = locks.acquire("c", { timeoutMs: 10_000 });
    await first.release();
    const third = await waiting;
    expect(third.fencingToken).toBeGreaterThan(second.fencingToken);
    await Promise.all([second.release(), third.release()]);
    expect(tableIdle(table).filter((p) => !p.endsWith("has waiters"))).toEqual([]);
  });

  it("refuses a bad holds option", () => {
    for (const holds of [0, 1.5, -1, 2 ** 21]) {
      expect(() => createSharedLockTable({ holds })).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT" }),
      );
    }
  });
});
