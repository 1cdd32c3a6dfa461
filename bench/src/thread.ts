import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { type Backend, createLocks, type Locks } from "@locks/core";
import { createSharedLockTable, type SharedLockTable, threadBackend } from "@locks/thread";
import { Mutex } from "async-mutex";
import type { BenchSuite, BenchTable } from "./table.js";
import { opsPerSecond } from "./table.js";

/*
 * @locks/thread against raw async-mutex, measured side by side in one run:
 * uncontended acquire+release, 16 async tasks contending on one key, and
 * the SharedArrayBuffer table (one thread, and 4 worker_threads contending)
 * against the in-isolate table. This file is also the workers' entry point.
 */

const UNCONTENDED_MS = 1_500;
const CONTENDED_MS = 1_500;
const TASKS = 16;
const WORKERS = 4;
const ROUNDS = 3;

interface WorkerJob {
  readonly role: "locks-thread-bench";
  readonly table: SharedLockTable;
  readonly durationMs: number;
}

/** Best of `ROUNDS` runs: the least disturbed by GC and the other threads of the machine. */
async function best(run: () => Promise<number>): Promise<number> {
  let top = 0;
  for (let i = 0; i < ROUNDS; i++) top = Math.max(top, await run());
  return top;
}

async function uncontendedLocks(backend: Backend): Promise<number> {
  const locks = createLocks(backend, { namespace: "bench" });
  try {
    return await best(() =>
      opsPerSecond(async () => {
        const lease = await locks.acquire("k");
        await lease.release();
      }, UNCONTENDED_MS / ROUNDS),
    );
  } finally {
    await locks.close();
  }
}

async function uncontendedTry(backend: Backend): Promise<number> {
  const locks = createLocks(backend, { namespace: "bench" });
  try {
    return await best(() =>
      opsPerSecond(async () => {
        const lease = await locks.tryAcquire("k");
        await lease!.release();
      }, UNCONTENDED_MS / ROUNDS),
    );
  } finally {
    await locks.close();
  }
}

async function uncontendedMutex(): Promise<number> {
  const mutex = new Mutex();
  return best(() =>
    opsPerSecond(async () => {
      const release = await mutex.acquire();
      release();
    }, UNCONTENDED_MS / ROUNDS),
  );
}

/** `tasks` async loops on one lock for `ms`; critical sections per second. */
async function contended(tasks: number, ms: number, cycle: () => Promise<void>): Promise<number> {
  let ops = 0;
  const start = performance.now();
  const end = start + ms;
  // Handoffs between tasks are microtasks only: a timer would never get to run, so read the clock.
  await Promise.all(
    Array.from({ length: tasks }, async () => {
      while (performance.now() < end) {
        await cycle();
        ops++;
      }
    }),
  );
  return (ops * 1000) / (performance.now() - start);
}

async function contendedLocks(backend: Backend, tasks = TASKS): Promise<number> {
  const locks = createLocks(backend, { namespace: "bench" });
  try {
    return await best(() =>
      contended(tasks, CONTENDED_MS / ROUNDS, async () => {
        const lease = await locks.acquire("k");
        await lease.release();
      }),
    );
  } finally {
    await locks.close();
  }
}

async function contendedMutex(): Promise<number> {
  const mutex = new Mutex();
  return best(() =>
    contended(TASKS, CONTENDED_MS / ROUNDS, async () => {
      const release = await mutex.acquire();
      release();
    }),
  );
}

/**
 * `WORKERS` worker_threads, one task each, loop on one key of the shared
 * table for `durationMs`; critical sections per second, all workers together.
 */
async function contendedWorkers(): Promise<number> {
  const table = createSharedLockTable({ slots: 64 });
  const entry = import.meta.url;
  const workers = Array.from({ length: WORKERS }, () => {
    const job: WorkerJob = { role: "locks-thread-bench", table, durationMs: CONTENDED_MS };
    // Workers ignore --import in execArgv (Node 20): register tsx inside the worker instead.
    return new Worker(
      `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`,
      { eval: true, workerData: job, execArgv: ["--conditions=@locks/source"] },
    );
  });
  const results = await Promise.all(
    workers.map(
      (worker) =>
        new Promise<{ ops: number; ms: number }>((resolve, reject) => {
          worker.once("message", resolve);
          worker.once("error", reject);
        }),
    ),
  );
  await Promise.all(workers.map((w) => w.terminate()));
  const ops = results.reduce((sum, r) => sum + r.ops, 0);
  const ms = Math.max(...results.map((r) => r.ms));
  return (ops * 1000) / ms;
}

async function workerMain(job: WorkerJob): Promise<void> {
  const locks: Locks = createLocks(threadBackend({ table: job.table }), { namespace: "bench" });
  let ops = 0;
  const start = performance.now();
  while (performance.now() - start < job.durationMs) {
    const lease = await locks.acquire("k");
    await lease.release();
    ops++;
  }
  const ms = performance.now() - start;
  await locks.close();
  parentPort!.postMessage({ ops, ms });
}

const run: BenchSuite = async () => {
  const table = createSharedLockTable({ slots: 64 });

  const mutexUncontended = await uncontendedMutex();
  const isolateUncontended = await uncontendedLocks(threadBackend());
  const isolateTry = await uncontendedTry(threadBackend());
  const tableUncontended = await uncontendedLocks(threadBackend({ table }));

  const mutexContended = await contendedMutex();
  const isolateContended = await contendedLocks(threadBackend());
  const tableContended = await contendedLocks(threadBackend({ table }));
  const isolateContended4 = await contendedLocks(threadBackend(), WORKERS);
  const workersContended = await contendedWorkers();

  const ratio = (x: number, of: number): string => `${(x / of).toFixed(2)}x`;
  const tables: BenchTable[] = [
    {
      suite: "thread",
      title: "@locks/thread vs async-mutex (one thread)",
      columns: ["case", "ops/s", "vs async-mutex"],
      rows: [
        ["async-mutex Mutex: acquire() + release(), uncontended", mutexUncontended, "1.00x"],
        [
          "threadBackend(): locks.acquire + lease.release, uncontended",
          isolateUncontended,
          ratio(isolateUncontended, mutexUncontended),
        ],
        [
          "threadBackend(): locks.tryAcquire + lease.release, uncontended",
          isolateTry,
          ratio(isolateTry, mutexUncontended),
        ],
        [
          `async-mutex Mutex: ${TASKS} tasks on one lock (critical sections/s)`,
          mutexContended,
          "1.00x",
        ],
        [
          `threadBackend(): ${TASKS} tasks on one key (critical sections/s)`,
          isolateContended,
          ratio(isolateContended, mutexContended),
        ],
      ],
      notes: [
        "Goal: uncontended overhead within 1.5x of raw async-mutex (ratio >= 0.67x).",
        `Best of ${ROUNDS} runs of ${UNCONTENDED_MS / ROUNDS} ms each; lease TTL off (the default), so no timer per lease.`,
      ],
    },
    {
      suite: "thread",
      title: "SharedArrayBuffer table vs in-isolate table",
      columns: ["case", "ops/s", "vs in-isolate"],
      rows: [
        [
          "table, one thread: locks.acquire + lease.release, uncontended",
          tableUncontended,
          ratio(tableUncontended, isolateUncontended),
        ],
        [
          `table, one thread: ${TASKS} tasks on one key (critical sections/s)`,
          tableContended,
          ratio(tableContended, isolateContended),
        ],
        [
          `table, ${WORKERS} worker_threads on one key (critical sections/s)`,
          workersContended,
          ratio(workersContended, isolateContended4),
        ],
        [
          `in-isolate, ${WORKERS} tasks on one key (critical sections/s, the reference above)`,
          isolateContended4,
          "1.00x",
        ],
      ],
      notes: [
        "Goal: the cross-worker table within 2x of the in-isolate path (ratio >= 0.5x).",
        "Workers are compared with as many async tasks in one isolate: the same number of contenders.",
      ],
    },
  ];
  return tables;
};

export default run;

const job = workerData as WorkerJob | undefined;
if (!isMainThread && job?.role === "locks-thread-bench") await workerMain(job);
