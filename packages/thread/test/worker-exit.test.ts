/*
 * The shared table across real worker_threads: holder labels read by another
 * thread, force-release of a worker's hold from the main thread, and
 * releaseOnExit freeing what a worker left when it returned, crashed, called
 * process.exit, or was terminated.
 */
import { randomBytes } from "node:crypto";
import type { Worker } from "node:worker_threads";
import { createLocks, type Locks } from "@locks/core";
import { afterEach, describe, expect, it } from "vitest";
import {
  createSharedLockTable,
  releaseOnExit,
  type SharedLockTable,
  threadBackend,
} from "../src/index.js";
import type { ContenderJob } from "./fixtures/contender.js";
import type { HolderCommand, HolderJob, HolderReply } from "./fixtures/holder.js";
import { recordsInUse, tableIdle, tableWords } from "./fixtures/table-words.js";
import { tsWorker } from "./fixtures/ts-worker.js";
import { until } from "./fixtures/until.js";

const holderEntry = new URL("./fixtures/holder.ts", import.meta.url);
const contenderEntry = new URL("./fixtures/contender.ts", import.meta.url);
const started = new Set<Worker>();
const opened: Locks[] = [];

afterEach(async () => {
  await Promise.all([...started].map((w) => w.terminate()));
  started.clear();
  await Promise.allSettled(opened.map((l) => l.close()));
  opened.length = 0;
});

const newNamespace = (): string => `exit-${randomBytes(6).toString("hex")}`;

/** A worker running the holder fixture, with its replies in arrival order. */
function startHolder(job: HolderJob) {
  const worker = tsWorker(holderEntry, { workerData: job });
  started.add(worker);
  const replies: HolderReply[] = [];
  const listeners = new Set<() => void>();
  worker.on("message", (reply: HolderReply) => {
    replies.push(reply);
    for (const listener of listeners) listener();
  });
  // A crash is what some tests ask for: keep it from failing the run.
  worker.on("error", () => {});
  const exited = new Promise<number>((resolve) => worker.once("exit", resolve));
  /** The first reply of `type`, waiting up to 20 s for it. */
  const reply = <T extends HolderReply["type"]>(type: T) =>
    new Promise<Extract<HolderReply, { type: T }>>((resolve, reject) => {
      const check = (): boolean => {
        const found = replies.find((r) => r.type === type);
        if (found === undefined) return false;
        listeners.delete(check);
        clearTimeout(timer);
        resolve(found as Extract<HolderReply, { type: T }>);
        return true;
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no "${type}" reply within 20 s: ${JSON.stringify(replies)}`));
      }, 20_000);
      if (!check()) listeners.add(check);
    });
  const send = (command: HolderCommand): void => worker.postMessage(command);
  return { worker, reply, send, exited };
}

function client(table: SharedLockTable, namespace: string): Locks {
  const locks = createLocks(threadBackend({ table }), { namespace });
  opened.push(locks);
  return locks;
}

describe("holder labels and force-release across worker_threads", () => {
  it("inspect in the main thread reads a worker's labels, modes and tokens", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const namespace = newNamespace();
    const holder = `worker "7" 👍\n${"é".repeat(120)}`;
    const long = "é".repeat(128); // 256 UTF-8 bytes: the most the core accepts
    const one = startHolder({ table, namespace, keys: ["a"], holder });
    const two = startHolder({ table, namespace, keys: ["doc"], holder: long, mode: "shared" });
    const [a, doc2] = await Promise.all([one.reply("held"), two.reply("held")]);
    const locks = client(table, namespace);
    const reader = await locks.acquire("doc", { mode: "shared" });
    const state = await locks.inspect("a");
    expect(state.holders).toEqual([
      { holder, mode: "exclusive", fencingToken: BigInt(a.tokens[0]!), expiresAt: undefined },
    ]);
    expect(state.limit, "only a semaphore has one").toBeUndefined();
    const docs = await locks.inspect("doc");
    // Sorted by token by the core.
    const sharers = [
      [long, BigInt(doc2.tokens[0]!)],
      [undefined, reader.fencingToken],
    ].sort((x, y) => (x[1]! < y[1]! ? -1 : 1));
    expect(docs.holders.map((h) => [h.holder, h.fencingToken])).toEqual(sharers);
    expect(docs.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    expect(await locks.inspect("free")).toMatchObject({ holders: [] });
  });

  it("forceRelease in the main thread evicts a worker's hold: its signal aborts, extend fails, the next token is higher", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const namespace = newNamespace();
    const worker = startHolder({ table, namespace, keys: ["job"], holder: "w1" });
    const { tokens } = await worker.reply("held");
    const locks = client(table, namespace);
    const waiting = locks.acquire("job", { timeoutMs: 20_000 });
    await until(() => tableWords(table, namespace, "job").writers() === 1, "the main thread waits");
    expect(await locks.forceRelease("job")).toBe(true);
    // The main thread's waiter is granted, above the evicted token.
    const lease = await waiting;
    expect(lease.fencingToken).toBeGreaterThan(BigInt(tokens[0]!));
    // The worker hears of it through the table's eviction word, without extending.
    expect(await worker.reply("lost")).toEqual({ type: "lost", code: "LOCK_LOST" });
    worker.send("extend");
    expect(await worker.reply("extend-failed")).toEqual({
      type: "extend-failed",
      code: "LOCK_LOST",
    });
    expect((await locks.inspect("job")).holders.map((h) => h.fencingToken)).toEqual([
      lease.fencingToken,
    ]);
    expect(tableWords(table, namespace, "job").state()).toBe(1);
    await lease.release();
    expect(await locks.forceRelease("job")).toBe(false);
  });

  it("forceRelease racing 3 workers that take and release one key: every grant's token is new, and the table ends idle", async () => {
    const table = createSharedLockTable({ slots: 4 });
    const namespace = newNamespace();
    const start = new Int32Array(new SharedArrayBuffer(4));
    Atomics.store(start, 0, 1);
    const workers = Array.from({ length: 3 }, (_, i) => {
      const job: ContenderJob = { table, namespace, key: "hot", loops: 60, label: `w${i}`, start };
      const worker = tsWorker(contenderEntry, { workerData: job });
      started.add(worker);
      return new Promise<Array<{ token: string }>>((resolve, reject) => {
        worker.on("message", (reply: { type: string; holds?: Array<{ token: string }> }) => {
          if (reply.type === "holds") resolve(reply.holds!);
        });
        worker.once("error", reject);
      });
    });
    const locks = client(table, namespace);
    let done = false;
    const all = Promise.all(workers).finally(() => {
      done = true;
    });
    let evictions = 0;
    while (!done) {
      if (await locks.forceRelease("hot")) evictions++;
      await new Promise((r) => setImmediate(r));
    }
    const tokens = (await all).flat().map((h) => BigInt(h.token));
    expect(tokens).toHaveLength(180);
    expect(new Set(tokens).size).toBe(180);
    expect(evictions).toBeGreaterThan(0);
    expect(tableIdle(table)).toEqual([]);
    expect(recordsInUse(table)).toBe(0);
  });
});

describe("releaseOnExit: a dead worker's keys are freed", () => {
  for (const [how, end] of [
    ["returns", (w: ReturnType<typeof startHolder>) => w.send("return")],
    ["throws", (w: ReturnType<typeof startHolder>) => w.send("throw")],
    ["calls process.exit", (w: ReturnType<typeof startHolder>) => w.send("exit")],
    ["is terminated", (w: ReturnType<typeof startHolder>) => void w.worker.terminate()],
  ] as const) {
    it(`a worker that ${how} while holding keys: the main thread's waiter gets them, with higher tokens`, async () => {
      const table = createSharedLockTable({ slots: 16 });
      const namespace = newNamespace();
      const holder = startHolder({ table, namespace, keys: ["a", "b", "c"], holder: how });
      const freed = releaseOnExit(table, holder.worker);
      const { tokens } = await holder.reply("held");
      const locks = client(table, namespace);
      const reader = await locks.acquire("r", { mode: "shared" });
      const waiting = locks.acquire("a", { timeoutMs: 20_000 });
      await until(() => tableWords(table, namespace, "a").writers() === 1, "the main thread waits");
      expect(await locks.tryAcquire("b")).toBeNull();
      end(holder);
      await holder.exited;
      expect(await freed).toBe(3);
      const lease = await waiting;
      expect(lease.fencingToken).toBeGreaterThan(BigInt(tokens[0]!));
      expect(tableWords(table, namespace, "a").state()).toBe(1);
      // The other keys are free and unbound; the main thread's reader still holds its key.
      for (const key of ["b", "c"]) expect(tableWords(table, namespace, key).bound()).toBe(false);
      expect(tableWords(table, namespace, "r").state()).toBe(-1);
      expect(reader.signal.aborted).toBe(false);
      const b = await locks.tryAcquire("b");
      expect(b!.fencingToken).toBeGreaterThan(BigInt(tokens[2]!));
      await Promise.all([lease.release(), b!.release()]);
    });
  }

  it("a worker that exits holding nothing frees nothing of others", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const namespace = newNamespace();
    const other = startHolder({ table, namespace, keys: ["x"], holder: "other" });
    const idle = startHolder({ table, namespace, keys: [] });
    const freed = releaseOnExit(table, idle.worker);
    await Promise.all([other.reply("held"), idle.reply("held")]);
    const locks = client(table, namespace);
    const mine = await locks.acquire("y", { holder: "main" });
    idle.send("return");
    expect(await idle.exited).toBe(0);
    expect(await freed).toBe(0);
    expect((await locks.inspect("x")).holders.map((h) => h.holder)).toEqual(["other"]);
    expect((await locks.inspect("y")).holders.map((h) => h.holder)).toEqual(["main"]);
    expect(tableWords(table, namespace, "x").state()).toBe(1);
    expect(mine.signal.aborted).toBe(false);
    await mine.release();
  });

  it("a worker terminated while waiting as a writer no longer holds readers back", async () => {
    const table = createSharedLockTable({ slots: 16 });
    const namespace = newNamespace();
    const locks = client(table, namespace);
    const reader = await locks.acquire("doc", { mode: "shared" });
    const writer = startHolder({ table, namespace, keys: [], waitFor: "doc" });
    const freed = releaseOnExit(table, writer.worker);
    await writer.reply("held");
    const words = tableWords(table, namespace, "doc");
    await until(() => words.writers() === 1, "the worker waits as a writer");
    // A waiting writer stops new readers.
    expect(await locks.tryAcquire("doc", { mode: "shared" })).toBeNull();
    await writer.worker.terminate();
    expect(await freed).toBe(0);
    expect(words.writers()).toBe(0);
    const second = await locks.tryAcquire("doc", { mode: "shared" });
    expect(second).not.toBeNull();
    await Promise.all([reader.release(), second!.release()]);
    // Waiters of the dead thread are still counted on the bucket: they only cost a notify.
    expect(tableIdle(table).filter((p) => !p.endsWith("has waiters"))).toEqual([]);
  });

  it("a worker that died with its bucket latched halfway through a change: the latch is taken back and the counts redone", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const namespace = newNamespace();
    const other = startHolder({ table, namespace, keys: ["o"], holder: "other" });
    const dying = startHolder({ table, namespace, keys: ["k"] });
    const freed = releaseOnExit(table, dying.worker);
    await Promise.all([other.reply("held"), dying.reply("held")]);
    dying.send("half-latched");
    await dying.exited;
    expect(await freed).toBe(1);
    expect(tableWords(table, namespace, "k").bound()).toBe(false);
    expect(tableWords(table, namespace, "o").state()).toBe(1);
    const locks = client(table, namespace);
    const lease = await locks.acquire("k", { timeoutMs: 20_000 });
    expect((await locks.inspect("o")).holders.map((h) => h.holder)).toEqual(["other"]);
    await lease.release();
  });

  it("refuses what is not a table or a running worker", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const codeOf = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (error) {
        return (error as { code?: string }).code;
      }
      return undefined;
    };
    expect(codeOf(() => releaseOnExit({} as SharedLockTable, {} as Worker))).toBe(
      "INVALID_ARGUMENT",
    );
    expect(codeOf(() => releaseOnExit(table, {} as Worker))).toBe("INVALID_ARGUMENT");
    const done = startHolder({ table, namespace: newNamespace(), keys: [] });
    await done.reply("held");
    await done.worker.terminate();
    expect(codeOf(() => releaseOnExit(table, done.worker))).toBe("INVALID_ARGUMENT");
  });
});
