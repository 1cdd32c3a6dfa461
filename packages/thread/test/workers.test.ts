import { randomBytes } from "node:crypto";
import type { Worker } from "node:worker_threads";
import { createLocks } from "@locks/core";
import { History, type HoldRecord } from "@locks/core/history";
import { afterEach, describe, expect, it } from "vitest";
import { createSharedLockTable, type SharedLockTable, threadBackend } from "../src/index.js";
import type { ContenderJob } from "./fixtures/contender.js";
import type { HammerJob } from "./fixtures/hammer.js";
import { tableIdle, tableWords } from "./fixtures/table-words.js";
import type { TokenHammerJob, TokenHammerResult } from "./fixtures/token-hammer.js";
import { tsWorker } from "./fixtures/ts-worker.js";

const contender = new URL("./fixtures/contender.ts", import.meta.url);
const hammer = new URL("./fixtures/hammer.ts", import.meta.url);
const tokenHammer = new URL("./fixtures/token-hammer.ts", import.meta.url);
const started = new Set<Worker>();

afterEach(async () => {
  await Promise.all([...started].map((w) => w.terminate()));
  started.clear();
});

type Reply = { type: "ready" } | { type: "holds"; holds: HoldRecord[] };

/** Runs `count` contender workers on one key; resolves with every hold they recorded. */
async function runContenders(
  count: number,
  job: Omit<ContenderJob, "label" | "start">,
): Promise<HoldRecord[]> {
  const start = new Int32Array(new SharedArrayBuffer(4));
  const workers = Array.from({ length: count }, (_, i) => {
    const worker = tsWorker(contender, { workerData: { ...job, label: `worker${i}`, start } });
    started.add(worker);
    return worker;
  });
  const outcomes = workers.map(
    (worker) =>
      new Promise<{ ready: Promise<void>; holds: Promise<HoldRecord[]>; exit: Promise<number> }>(
        (resolve) => {
          let onReady!: () => void;
          let onHolds!: (holds: HoldRecord[]) => void;
          let fail!: (error: unknown) => void;
          const ready = new Promise<void>((r) => {
            onReady = r;
          });
          const holds = new Promise<HoldRecord[]>((r, j) => {
            onHolds = r;
            fail = j;
          });
          const exit = new Promise<number>((r) => worker.once("exit", r));
          worker.on("message", (reply: Reply) => {
            if (reply.type === "ready") onReady();
            else onHolds(reply.holds);
          });
          worker.once("error", fail);
          void exit.then((code) => fail(new Error(`worker exited with ${code} before reporting`)));
          resolve({ ready, holds, exit });
        },
      ),
  );
  const handles = await Promise.all(outcomes);
  await Promise.all(handles.map((h) => h.ready));
  Atomics.store(start, 0, 1);
  Atomics.notify(start, 0);
  const holds = (await Promise.all(handles.map((h) => h.holds))).flat();
  // Each worker closed its backend and ended on its own: nothing kept it alive.
  expect(await Promise.all(handles.map((h) => h.exit))).toEqual(workers.map(() => 0));
  return holds;
}

function expectTableIdle(table: SharedLockTable): void {
  expect(tableIdle(table)).toEqual([]);
}

const namespace = (): string => `workers-${randomBytes(6).toString("hex")}`;

describe("worker_threads through a shared table", () => {
  it("4 workers x 150 loops on one key: no overlap, tokens increase in grant order", async () => {
    const table = createSharedLockTable({ slots: 64 });
    const loops = 150;
    const holds = await runContenders(4, { table, namespace: namespace(), key: "one", loops });
    expect(holds).toHaveLength(4 * loops);
    const history = new History();
    history.add(...holds);
    history.assertValid({ fencing: true });
    // Every worker got the key, interleaved with the others rather than in four runs.
    const owners = holds.sort((a, b) => a.acquiredAt - b.acquiredAt).map((h) => h.owner);
    const switches = owners.filter((o, i) => i > 0 && o !== owners[i - 1]).length;
    expect(switches).toBeGreaterThan(3);
    expectTableIdle(table);
  });

  it("readers and writers across 4 workers never overlap wrongly", async () => {
    const table = createSharedLockTable({ slots: 64 });
    const holds = await runContenders(4, {
      table,
      namespace: namespace(),
      key: "rw",
      loops: 90,
      mode: "mixed",
    });
    const history = new History();
    history.add(...holds);
    history.assertValid({ fencing: false });
    expect(holds.some((h) => h.mode === "shared")).toBe(true);
    expectTableIdle(table);
  });

  it("a semaphore across 4 workers never exceeds its limit", async () => {
    const table = createSharedLockTable({ slots: 64 });
    const holds = await runContenders(4, {
      table,
      namespace: namespace(),
      key: "pool",
      loops: 90,
      limit: 2,
    });
    const history = new History();
    history.add(...holds);
    history.assertValid({ fencing: false });
    expectTableIdle(table);
  });

  it("24 keys in one bucket: entries bound and freed concurrently by 4 workers", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const holds = await runContenders(4, {
      table,
      namespace: namespace(),
      key: "many",
      keys: 24,
      loops: 150,
      mode: "mixed",
    });
    expect(holds).toHaveLength(4 * 150);
    expect(new Set(holds.map((h) => h.key)).size).toBeGreaterThan(14);
    const history = new History();
    history.add(...holds);
    history.assertValid({ fencing: false });
    expectTableIdle(table);
  });

  it("4 workers hammering 16 keys of one bucket: never two holders at once", async () => {
    const table = createSharedLockTable({ slots: 1 });
    const keys = 16;
    const start = new Int32Array(new SharedArrayBuffer(4));
    const occupancy = new Int32Array(new SharedArrayBuffer(4 * keys));
    const job: HammerJob = {
      table,
      namespace: namespace(),
      keys,
      cycles: 20_000,
      occupancy,
      start,
    };
    const workers = Array.from({ length: 4 }, () => {
      const worker = tsWorker(hammer, { workerData: job });
      started.add(worker);
      return worker;
    });
    type HammerReply = { type: "ready" } | { type: "done"; granted: number; violations: number };
    const next = (worker: Worker, type: HammerReply["type"]) =>
      new Promise<HammerReply>((resolve, reject) => {
        const onMessage = (reply: HammerReply): void => {
          if (reply.type !== type) return;
          worker.off("message", onMessage);
          resolve(reply);
        };
        worker.on("message", onMessage);
        worker.once("error", reject);
      });
    await Promise.all(workers.map((w) => next(w, "ready")));
    const done = Promise.all(workers.map((w) => next(w, "done")));
    Atomics.store(start, 0, 1);
    Atomics.notify(start, 0);
    const replies = (await done) as Array<Extract<HammerReply, { type: "done" }>>;
    expect(replies.map((r) => r.violations)).toEqual([0, 0, 0, 0]);
    // Keys were really contended, and really granted.
    expect(replies.every((r) => r.granted > 1_000)).toBe(true);
    expectTableIdle(table);
  });

  it("4 workers granting in tight loops on their own and on shared keys: per key, tokens strictly increase and none is handed out twice", async () => {
    const table = createSharedLockTable({ slots: 64 });
    const workers = 4;
    const shared = 3;
    const own = 2;
    const keyCount = shared + workers * own;
    const start = new Int32Array(new SharedArrayBuffer(4));
    const order = new Int32Array(new SharedArrayBuffer(4 * keyCount));
    const occupancy = new Int32Array(new SharedArrayBuffer(4 * keyCount));
    const ns = namespace();
    const threads = Array.from({ length: workers }, (_, index) => {
      const job: TokenHammerJob = {
        table,
        namespace: ns,
        index,
        workers,
        shared,
        own,
        cycles: 8_000,
        order,
        occupancy,
        start,
      };
      const worker = tsWorker(tokenHammer, { workerData: job });
      started.add(worker);
      return worker;
    });
    type Reply = { type: "ready" } | TokenHammerResult;
    const next = (worker: Worker, type: Reply["type"]) =>
      new Promise<Reply>((resolve, reject) => {
        const onMessage = (reply: Reply): void => {
          if (reply.type !== type) return;
          worker.off("message", onMessage);
          resolve(reply);
        };
        worker.on("message", onMessage);
        worker.once("error", reject);
        worker.once("exit", (code) => reject(new Error(`worker exited with ${code}`)));
      });
    await Promise.all(threads.map((w) => next(w, "ready")));
    const done = Promise.all(threads.map((w) => next(w, "done")));
    Atomics.store(start, 0, 1);
    Atomics.notify(start, 0);
    const results = (await done) as TokenHammerResult[];
    expect(results.map((r) => r.violations)).toEqual([0, 0, 0, 0]);

    // Every grant of a key, by its place in the key's order (a counter bumped under the lock).
    const byKey = Array.from({ length: keyCount }, () => new Map<number, bigint>());
    const workersOfKey = Array.from({ length: keyCount }, () => new Set<number>());
    const seen = new Set<bigint>();
    results.forEach((result, w) => {
      for (let i = 0; i < result.granted; i++) {
        const key = result.keys[i]!;
        const token = result.tokens[i]!;
        expect(seen.has(token), `token ${token} handed out twice`).toBe(false);
        seen.add(token);
        byKey[key]!.set(result.places[i]!, token);
        workersOfKey[key]!.add(w);
      }
    });
    for (let key = 0; key < keyCount; key++) {
      const grants = byKey[key]!;
      // Places 0..n-1, each once: every grant of the key was counted under the lock.
      expect(grants.size).toBe(order[key]);
      let last = 0n;
      for (let place = 0; place < grants.size; place++) {
        const token = grants.get(place);
        expect(token, `key ${key}: grant ${place} missing`).toBeDefined();
        if (token! <= last) {
          throw new Error(`key ${key}: grant ${place} got token ${token} after ${last}`);
        }
        last = token!;
      }
      // Shared keys were really contended by several workers; own keys by their owner only.
      if (key < shared) expect(workersOfKey[key]!.size).toBeGreaterThan(1);
      else expect(workersOfKey[key]!.size).toBe(1);
    }
    expect(results.every((r) => r.granted > 1_000)).toBe(true);
    expectTableIdle(table);
  }, 120_000);

  it("a worker waiting for the main thread's lock is woken by the release", async () => {
    const table = createSharedLockTable({ slots: 64 });
    const ns = namespace();
    const locks = createLocks(threadBackend({ table }), { namespace: ns });
    try {
      const held = await locks.acquire("handoff");
      const start = new Int32Array(new SharedArrayBuffer(4));
      Atomics.store(start, 0, 1);
      const worker = tsWorker(contender, {
        workerData: {
          table,
          namespace: ns,
          key: "handoff",
          loops: 1,
          label: "worker",
          start,
        } satisfies ContenderJob,
      });
      started.add(worker);
      const holds = new Promise<HoldRecord[]>((resolve, reject) => {
        worker.on("message", (reply: Reply) => {
          if (reply.type === "holds") resolve(reply.holds);
        });
        worker.once("error", reject);
      });
      // Wait until the worker sleeps on the slot (its waiter count is visible in the table).
      const words = tableWords(table, ns, "handoff");
      const deadline = performance.now() + 20_000;
      while (words.waiters() === 0) {
        if (performance.now() > deadline) throw new Error("the worker never waited");
        await new Promise((r) => setTimeout(r, 5));
      }
      const seq = words.seq();
      const released = performance.now();
      await held.release();
      const [hold] = await holds;
      expect(words.seq()).toBeGreaterThan(seq);
      expect(BigInt(hold!.token)).toBeGreaterThan(held.fencingToken);
      // Woken by Atomics.notify, not by the 1 s re-check.
      expect(performance.now() - released).toBeLessThan(500);
    } finally {
      await locks.close();
    }
  });
});
