import { randomBytes } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type Backend, createLocks, type Lease, type Locks } from "@locks/core";
import {
  createRequest,
  type LockRequest,
  type RequestFields,
  scopedKey,
} from "@locks/core/backend";
import { afterEach, describe, expect, it } from "vitest";
import { createSharedLockTable, type SharedLockTable, threadBackend } from "../src/index.js";
import { registry } from "../src/registry.js";
import { tableIdle, tableWords } from "./fixtures/table-words.js";

const opened: Array<Locks | Backend> = [];
afterEach(async () => {
  await Promise.allSettled(opened.map((o) => o.close()));
  opened.length = 0;
});

const newNamespace = (): string => `thread-${randomBytes(6).toString("hex")}`;

function client(backend: Backend, namespace: string): Locks {
  const locks = createLocks(backend, { namespace });
  opened.push(locks);
  return locks;
}

function backendOf(options: Parameters<typeof threadBackend>[0] = {}): Backend {
  const backend = threadBackend(options);
  opened.push(backend);
  return backend;
}

function request(namespace: string, key: string, extra: Partial<RequestFields> = {}): LockRequest {
  return createRequest({ key, namespace, ...extra });
}

/** The `hold` of a granted attempt (fails the test when it was not granted). */
function holdOf(attempt: Awaited<ReturnType<Backend["tryAcquire"]>>): unknown {
  expect(attempt.granted).toBe(true);
  return attempt.granted ? attempt.hold : undefined;
}

/** How many keys keep state (holders or waiters) in the isolate's table under one namespace. */
function keysWithState(namespace: string): number {
  const prefix = scopedKey(namespace, "");
  let count = 0;
  for (const id of registry.states.keys()) if (id.startsWith(prefix)) count++;
  return count;
}

/** Settles to "pending" if `promise` has not settled after the microtasks and one macrotask turn. */
async function peek<T>(promise: Promise<T>): Promise<T | "pending"> {
  return Promise.race([promise, new Promise<"pending">((r) => setImmediate(() => r("pending")))]);
}

/** Collects garbage (through a V8 flag set at run time) and returns the heap in use. */
function heapAfterGc(): number {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** The in-isolate key state, or undefined when the key keeps none. */
function stateOf(namespace: string, key: string) {
  return registry.states.get(scopedKey(namespace, key));
}

describe("threadBackend() in one isolate", () => {
  it("readers/writer: a waiting writer is not starved; readers after it wait behind it", async () => {
    const ns = newNamespace();
    const [a, b, c] = [0, 1, 2].map(() => client(threadBackend(), ns));
    const order: string[] = [];
    const r1 = await a!.acquire("doc", { mode: "shared" });
    const writer = b!.acquire("doc").then((lease) => {
      order.push("writer");
      return lease;
    });
    expect(await peek(writer)).toBe("pending");
    // A new reader may not join the current one while a writer waits.
    expect(await c!.tryAcquire("doc", { mode: "shared" })).toBeNull();
    const r2 = c!.acquire("doc", { mode: "shared" }).then((lease) => {
      order.push("reader 2");
      return lease;
    });
    const r3 = a!.acquire("doc", { mode: "shared" }).then((lease) => {
      order.push("reader 3");
      return lease;
    });
    expect(await peek(r2)).toBe("pending");
    await r1.release();
    const w = await writer;
    expect(await peek(r2)).toBe("pending");
    await w.release();
    // Readers queued together are admitted together.
    const [l2, l3] = await Promise.all([r2, r3]);
    expect(order).toEqual(["writer", "reader 2", "reader 3"]);
    expect(l3!.fencingToken).toBeGreaterThan(w.fencingToken);
    await Promise.all([l2!.release(), l3!.release()]);
    expect(keysWithState(ns)).toBe(0);
  });

  it("a writer gets in while overlapping readers keep coming", async () => {
    const ns = newNamespace();
    const readers = client(threadBackend(), ns);
    const writers = client(threadBackend(), ns);
    let previous = await readers.acquire("stream", { mode: "shared" });
    let writerDone = false;
    let readsAfterWriter = 0;
    const writer = writers.acquire("stream", { timeoutMs: 5_000 }).then(async (lease) => {
      writerDone = true;
      await lease.release();
    });
    // Each reader asks before the previous one leaves; once the writer waits, they queue behind it.
    for (let i = 0; i < 20 && !writerDone; i++) {
      const next = readers.acquire("stream", { mode: "shared" });
      await new Promise((r) => setImmediate(r));
      await previous.release();
      previous = await next;
      if (writerDone) readsAfterWriter++;
    }
    await writer;
    await previous.release();
    expect(writerDone).toBe(true);
    expect(readsAfterWriter).toBeLessThanOrEqual(1);
  });

  it("semaphore: at most `limit` holders, waiters admitted in arrival order", async () => {
    const ns = newNamespace();
    const locks = client(threadBackend(), ns);
    const held: Lease[] = [];
    for (let i = 0; i < 3; i++) held.push((await locks.tryAcquire("pool", { limit: 3 }))!);
    expect(held.every((l) => l !== null)).toBe(true);
    expect(await locks.tryAcquire("pool", { limit: 3 })).toBeNull();
    const order: number[] = [];
    const waiting = [0, 1].map((i) =>
      locks.acquire("pool", { limit: 3 }).then((lease) => {
        order.push(i);
        return lease;
      }),
    );
    await held[0]!.release();
    const first = await waiting[0]!;
    expect(await peek(waiting[1]!)).toBe("pending");
    await held[1]!.release();
    const second = await waiting[1]!;
    expect(order).toEqual([0, 1]);
    expect(stateOf(ns, "pool")!.exclusive).toBe(3);
    await Promise.all([held[2]!.release(), first.release(), second.release()]);
    expect(keysWithState(ns)).toBe(0);
  });

  it("per-key memory: 100,000 cycles over 100,000 distinct keys leave nothing behind", async () => {
    const ns = newNamespace();
    const locks = client(threadBackend(), ns);
    const cycle = async (i: number): Promise<void> => {
      const lease = await locks.acquire(`key-${i}`);
      await lease.release();
    };
    for (let i = 0; i < 10_000; i++) await cycle(-i - 1);
    const before = heapAfterGc();
    const keysBefore = registry.states.size;
    for (let i = 0; i < 100_000; i++) await cycle(i);
    expect(keysWithState(ns)).toBe(0);
    expect(registry.states.size).toBe(keysBefore);
    // Any per-key residue (even 10 bytes a key) would show as a megabyte here.
    expect(heapAfterGc() - before).toBeLessThan(1_000_000);
  });

  it("per-key memory with TTL and with waiters: nothing left once every key is released", async () => {
    const ns = newNamespace();
    const a = client(threadBackend({ ttl: true }), ns);
    const b = client(threadBackend({ ttl: true }), ns);
    for (let i = 0; i < 2_000; i++) {
      const held = await a.acquire(`k${i}`, { ttlMs: 60_000 });
      const waiting = b.acquire(`k${i}`, { ttlMs: 60_000 });
      await held.release();
      await (await waiting).release();
    }
    expect(keysWithState(ns)).toBe(0);
  });

  it("abort while queued: rejects with signal.reason and leaves no queue entry", async () => {
    const ns = newNamespace();
    const [a, b, c] = [0, 1, 2].map(() => client(threadBackend(), ns));
    const held = await a!.acquire("k");
    const controller = new AbortController();
    const waiting = b!.acquire("k", { signal: controller.signal });
    expect(await peek(waiting)).toBe("pending");
    expect(stateOf(ns, "k")!.head).toBeDefined();
    const reason = new Error("gave up");
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(stateOf(ns, "k")!.head).toBeUndefined();
    await held.release();
    expect(keysWithState(ns)).toBe(0);
    const next = await c!.tryAcquire("k");
    expect(next).not.toBeNull();
    await next!.release();
  });

  it("an aborted writer at the head of the queue stops holding readers back", async () => {
    const ns = newNamespace();
    const [a, b, c] = [0, 1, 2].map(() => client(threadBackend(), ns));
    const r1 = await a!.acquire("doc", { mode: "shared" });
    const controller = new AbortController();
    const writer = b!.acquire("doc", { signal: controller.signal });
    // Queued (its first attempt failed): from now on, readers line up behind it.
    expect(await peek(writer)).toBe("pending");
    const r2 = c!.acquire("doc", { mode: "shared" });
    expect(await peek(r2)).toBe("pending");
    controller.abort(new Error("writer gave up"));
    await expect(writer).rejects.toThrow("writer gave up");
    // r1 still holds: r2 is admitted beside it at once.
    const second = await r2;
    expect(second.mode).toBe("shared");
    await Promise.all([r1.release(), second.release()]);
    expect(keysWithState(ns)).toBe(0);
  });

  it("waits sharing one signal: its abort takes them all out at once, none granted on the way", async () => {
    const ns = newNamespace();
    const backend = backendOf();
    const reader = request(ns, "doc", { mode: "shared" });
    const readerHold = holdOf(await backend.tryAcquire(reader));
    const controller = new AbortController();
    const { signal } = controller;
    const writer = backend.acquire!(request(ns, "doc"), { signal });
    // A reader behind the writer: the writer leaving must not let it in before the abort reaches it.
    const behind = backend.acquire!(request(ns, "doc", { mode: "shared" }), { signal });
    const third = backend.acquire!(request(ns, "doc"), { signal });
    controller.abort(new Error("all gave up"));
    await expect(writer).rejects.toThrow("all gave up");
    await expect(behind).rejects.toThrow("all gave up");
    await expect(third).rejects.toThrow("all gave up");
    expect(stateOf(ns, "doc")!.head).toBeUndefined();
    expect(stateOf(ns, "doc")!.holds).toHaveLength(1);
    await backend.release(reader, readerHold);
    expect(keysWithState(ns)).toBe(0);
  });

  it("waits on their own signals beside waits sharing one: each leaves on its own abort", async () => {
    const ns = newNamespace();
    const backend = backendOf();
    const holder = request(ns, "k");
    const hold = holdOf(await backend.tryAcquire(holder));
    const shared = new AbortController();
    const own = new AbortController();
    const first = backend.acquire!(request(ns, "k"), { signal: shared.signal });
    const alone = backend.acquire!(request(ns, "k"), { signal: own.signal });
    const last = request(ns, "k");
    const behind = backend.acquire!(last, { signal: shared.signal });
    own.abort(new Error("own"));
    await expect(alone).rejects.toThrow("own");
    shared.abort(new Error("shared"));
    await expect(first).rejects.toThrow("shared");
    await expect(behind).rejects.toThrow("shared");
    const next = new AbortController();
    const later = request(ns, "k");
    const waiting = backend.acquire!(later, { signal: next.signal });
    await backend.release(holder, hold);
    await backend.release(later, holdOf((await waiting)!));
    expect(keysWithState(ns)).toBe(0);
  });

  it("the abort of the waiter whose signal the queue listens to takes out that waiter only", async () => {
    const ns = newNamespace();
    const backend = backendOf();
    const holder = request(ns, "k");
    const hold = holdOf(await backend.tryAcquire(holder));
    const first = new AbortController();
    const gaveUp = backend.acquire!(request(ns, "k"), { signal: first.signal });
    const others = Array.from({ length: 3 }, () => {
      const req = request(ns, "k");
      return { req, granted: backend.acquire!(req, { signal: new AbortController().signal }) };
    });
    first.abort(new Error("first"));
    await expect(gaveUp).rejects.toThrow("first");
    await backend.release(holder, hold);
    for (const { req, granted } of others) await backend.release(req, holdOf((await granted)!));
    expect(keysWithState(ns)).toBe(0);
  });

  it("2,000 waiters of one client (one shared close signal) all get the key in turn", async () => {
    const ns = newNamespace();
    const locks = client(threadBackend(), ns);
    const held = await locks.acquire("k");
    let done = 0;
    const waiters = Array.from({ length: 2_000 }, () =>
      locks.acquire("k").then(async (lease) => {
        done++;
        await lease.release();
      }),
    );
    await held.release();
    await Promise.all(waiters);
    expect(done).toBe(2_000);
    expect(keysWithState(ns)).toBe(0);
  });

  it("closing a client takes its waiters out of the queue and frees its holds; others' waiters get the key", async () => {
    const ns = newNamespace();
    const one = client(threadBackend(), ns);
    const two = client(threadBackend(), ns);
    await one.acquire("k");
    const mine = one.acquire("k");
    const theirs = two.acquire("k");
    expect(await peek(theirs)).toBe("pending");
    await one.close();
    await expect(mine).rejects.toMatchObject({ code: "LOCK_CLOSED" });
    // one's hold is gone and its waiter left the queue: two's waiter, queued behind both, is granted.
    await (await theirs).release();
    expect(keysWithState(ns)).toBe(0);
  });

  it("release without a hold (an attempt whose outcome is unknown) frees what the owner holds of the key", async () => {
    const ns = newNamespace();
    const backend = backendOf();
    const held = request(ns, "k");
    holdOf(await backend.tryAcquire(held));
    await backend.release(request(ns, "k"), undefined);
    expect((await backend.tryAcquire(request(ns, "k"))).granted).toBe(false);
    await backend.release(held, undefined);
    expect(keysWithState(ns)).toBe(0);
  });

  it("ttl: the store frees an expired hold and wakes the queue; the expired hold acts on nothing", async () => {
    const ns = newNamespace();
    const one = backendOf({ ttl: true });
    const two = backendOf({ ttl: true });
    expect(one.capabilities.ttl).toBe(true);
    const abandoned = request(ns, "k", { ttlMs: 60 });
    // Read before the grant: a pause after it (a loaded machine) must not count as waiting.
    const started = performance.now();
    const granted = await one.tryAcquire(abandoned);
    const abandonedHold = holdOf(granted);
    const next = request(ns, "k");
    const attempt = (await two.acquire!(next, { signal: new AbortController().signal }))!;
    expect(attempt.granted).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    if (granted.granted) expect(attempt.fencingToken).toBeGreaterThan(granted.fencingToken);
    // The expired owner can neither extend nor release the new holder's lock.
    expect(await one.extend(abandoned, abandonedHold, 1_000)).toBe(false);
    await one.release(abandoned, abandonedHold);
    await one.release(abandoned, undefined);
    expect((await one.tryAcquire(request(ns, "k"))).granted).toBe(false);
    const status = await two.inspect!(request(ns, "k"));
    expect(status.holders.map((h) => h.owner)).toEqual([next.owner]);
    expect(status.holders[0]!.expiresInMs).toBeGreaterThan(0);
    await two.release(next, attempt.hold);
    expect(keysWithState(ns)).toBe(0);
  });

  it("without ttl no timer runs and a hold outlives its ttlMs", async () => {
    const ns = newNamespace();
    const backend = backendOf();
    const held = request(ns, "k", { ttlMs: 1 });
    const hold = holdOf(await backend.tryAcquire(held));
    await new Promise((r) => setTimeout(r, 20));
    expect((await backend.tryAcquire(request(ns, "k"))).granted).toBe(false);
    expect(await backend.extend(held, hold, 1)).toBe(true);
    expect(stateOf(ns, "k")!.timer).toBeUndefined();
    await backend.release(held, hold);
  });

  it("refuses bad options synchronously with INVALID_ARGUMENT naming them", () => {
    const table = createSharedLockTable({ slots: 4 });
    const cases: Array<[() => unknown, string]> = [
      [() => threadBackend({ ttl: "yes" as unknown as boolean }), "ttl"],
      [() => threadBackend({ bogus: 1 } as never), "bogus"],
      [() => threadBackend(null as never), "options"],
      [() => threadBackend({ table: {} as SharedLockTable }), "table"],
      [
        () => threadBackend({ table: { buffer: new SharedArrayBuffer(4096), slots: 4 } as never }),
        "table",
      ],
      [() => threadBackend({ table, ttl: true }), "ttl"],
      [() => createSharedLockTable({ slots: 0 }), "slots"],
      [() => createSharedLockTable({ slots: 1.5 }), "slots"],
      [() => createSharedLockTable({ slots: 2 ** 21 }), "slots"],
      [() => createSharedLockTable({ size: 4 } as never), "size"],
    ];
    for (const [make, name] of cases) {
      expect(make).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
      expect(make).toThrow(name);
    }
  });
});

describe("threadBackend({ table }) in one thread", () => {
  it("declares what it honours: no TTL, not FIFO", () => {
    const backend = backendOf({ table: createSharedLockTable() });
    expect(backend.capabilities).toEqual({
      scope: "process",
      ttl: false,
      fencing: true,
      shared: true,
      semaphore: true,
      fair: false,
      notify: true,
    });
    expect(Object.isFrozen(backend.capabilities)).toBe(true);
  });

  it("keys sharing a bucket stay distinct; an 8th key of a full bucket waits", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const ns = newNamespace();
    const one = backendOf({ table });
    const two = backendOf({ table });
    const held = Array.from({ length: 7 }, (_, i) => request(ns, `k${i}`));
    const holds: unknown[] = [];
    for (const req of held) holds.push(holdOf(await one.tryAcquire(req)));
    // Same bucket, distinct keys: each is still held on its own.
    for (const req of held)
      expect((await two.tryAcquire(request(ns, req.key))).granted).toBe(false);
    expect((await two.tryAcquire(request(ns, "k7"))).granted).toBe(false);
    const waiting = client(two, ns).acquire("k7");
    expect(await peek(waiting)).toBe("pending");
    await one.release(held[3]!, holds[3]);
    await (await waiting).release();
    for (const [i, req] of held.entries()) await one.release(req, holds[i]);
    expect(tableIdle(table)).toEqual([]);
  });

  it("a hold is released once: release is idempotent, a stale hold neither extends nor frees another holder's place", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const ns = newNamespace();
    const one = backendOf({ table });
    const two = backendOf({ table });
    const words = tableWords(table, ns, "a");
    const a = request(ns, "a");
    const hold = holdOf(await one.tryAcquire(a));
    // Without a hold there is nothing to release: the table records no owners.
    await two.release(request(ns, "a"), undefined);
    expect(words.state()).toBe(1);
    expect(await one.extend(a, hold, 100)).toBe(true);
    await one.release(a, hold);
    await one.release(a, hold);
    expect(words.bound()).toBe(false);
    expect(await one.extend(a, hold, 100)).toBe(false);
    const again = request(ns, "a");
    const next = holdOf(await two.tryAcquire(again));
    await one.release(a, hold);
    expect(words.state()).toBe(1);
    await two.release(again, next);
    expect(tableIdle(table)).toEqual([]);
  });

  it("a waiting writer holds back new readers; when it gives up they get in", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const ns = newNamespace();
    const [a, b, c] = [0, 1, 2].map(() => client(threadBackend({ table }), ns));
    const words = tableWords(table, ns, "doc");
    const r1 = await a!.acquire("doc", { mode: "shared" });
    expect(await c!.tryAcquire("doc", { mode: "shared" }).then((l) => l?.release())).toBe(
      undefined,
    );
    const controller = new AbortController();
    const writer = b!.acquire("doc", { signal: controller.signal });
    expect(await peek(writer)).toBe("pending");
    expect(words.writers()).toBe(1);
    expect(await c!.tryAcquire("doc", { mode: "shared" })).toBeNull();
    controller.abort(new Error("writer gave up"));
    await expect(writer).rejects.toThrow("writer gave up");
    expect(words.writers()).toBe(0);
    expect(words.waiters()).toBe(0);
    const r2 = await c!.tryAcquire("doc", { mode: "shared" });
    expect(r2).not.toBeNull();
    expect(words.state()).toBe(-2);
    await Promise.all([r1.release(), r2!.release()]);
    expect(words.state()).toBe(0);
  });

  it("a writer waiting on readers gets in once they leave", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const ns = newNamespace();
    const [a, b] = [0, 1].map(() => client(threadBackend({ table }), ns));
    const r1 = await a!.acquire("doc", { mode: "shared" });
    const r2 = await a!.acquire("doc", { mode: "shared" });
    const writer = b!.acquire("doc", { timeoutMs: 5_000 });
    await r1.release();
    expect(await peek(writer)).toBe("pending");
    await r2.release();
    const w = await writer;
    expect(w.fencingToken).toBeGreaterThan(r2.fencingToken);
    await w.release();
    const words = tableWords(table, ns, "doc");
    expect([words.state(), words.waiters(), words.writers()]).toEqual([0, 0, 0]);
  });

  it("closing a client ends its waits on the table and releases its holds", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const ns = newNamespace();
    const one = client(threadBackend({ table }), ns);
    const two = client(threadBackend({ table }), ns);
    const words = tableWords(table, ns, "k");
    await two.acquire("k");
    const waiting = one.acquire("k");
    expect(await peek(waiting)).toBe("pending");
    expect([words.waiters(), words.writers()]).toEqual([1, 1]);
    await one.close();
    await expect(waiting).rejects.toMatchObject({ code: "LOCK_CLOSED" });
    expect([words.waiters(), words.writers()]).toEqual([0, 0]);
    await two.close();
    expect(tableIdle(table)).toEqual([]);
  });

  it("per-key memory: 100,000 distinct keys through the table leave nothing behind", async () => {
    const table = createSharedLockTable({ slots: 1024 });
    const ns = newNamespace();
    const locks = client(threadBackend({ table }), ns);
    const cycle = async (i: number): Promise<void> => {
      const lease = await locks.acquire(`key-${i}`);
      await lease.release();
    };
    for (let i = 0; i < 10_000; i++) await cycle(-i - 1);
    const before = heapAfterGc();
    for (let i = 0; i < 100_000; i++) await cycle(i);
    expect(heapAfterGc() - before).toBeLessThan(1_000_000);
    expect(tableIdle(table)).toEqual([]);
  });
});
