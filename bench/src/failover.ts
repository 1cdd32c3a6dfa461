import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { nodeChildArgs, startEtcd, startMariadb, startPostgres, startRedis } from "@locks/testkit";
import { createSharedLockTable, releaseOnExit, type SharedLockTable } from "@locks/thread";
import { median } from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * Leader failover per backend: replicas run `locks.lead` on one key in
 * separate processes; the leader is killed with SIGKILL (no release, no
 * clean-up) and the time to the next replica's `fn` starting is measured,
 * against the lease TTL. A store that ties the lock to a session the kernel
 * closes with the process (postgres, MariaDB) fails over at once; one that
 * only has the TTL (redis, etcd, file) in about one TTL; worker threads over
 * a shared table as soon as `releaseOnExit` sees the worker exit.
 */

const TTL_MS = 2_000;
const ROUNDS = 4;
const child = fileURLToPath(new URL("./failover/child.ts", import.meta.url));
const worker = new URL("./failover/worker.ts", import.meta.url);
const tsxApi = import.meta.resolve("tsx/esm/api");

interface Replica {
  /** Resolves with the time (performance.now()) the replica said `word`. */
  next(word: "CAMPAIGNING" | "LEADING"): Promise<number>;
  /** Ends it the hardest way there is: SIGKILL for a process, terminate() for a worker. */
  kill(): Promise<void>;
}

function startReplica(backend: string, target: string, key: string): Replica {
  const proc = spawn(
    process.execPath,
    [...nodeChildArgs, child, backend, target, key, String(TTL_MS)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  return {
    next: replicaSaying((onLine) => createInterface({ input: proc.stdout! }).on("line", onLine)),
    kill: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) resolve();
        proc.once("exit", () => resolve());
        proc.kill("SIGKILL");
      }),
  };
}

/** A worker thread replica over a shared table; `releaseOnExit` frees what it held. */
function startWorkerReplica(table: SharedLockTable, key: string): Replica {
  // Node 20 ignores `--import tsx` in a worker's execArgv: the worker registers tsx itself.
  const code = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(worker.href)}); });`;
  const thread = new Worker(code, {
    eval: true,
    execArgv: ["--conditions=@locks/source"],
    workerData: { table, key },
  });
  void releaseOnExit(table, thread);
  return {
    next: replicaSaying((onLine) => thread.on("message", onLine)),
    kill: async () => {
      await thread.terminate();
    },
  };
}

/** `next` of a replica whose lines `listen` delivers: each word is seen once, said before or after the wait. */
function replicaSaying(listen: (onLine: (line: string) => void) => void): Replica["next"] {
  const waiting = new Map<string, (at: number) => void>();
  const seen = new Map<string, number>();
  listen((line) => {
    const at = performance.now();
    const word = line.split(" ")[0]!;
    const resolve = waiting.get(word);
    if (resolve === undefined) seen.set(word, at);
    else {
      waiting.delete(word);
      resolve(at);
    }
  });
  return (word) => {
    const at = seen.get(word);
    if (at !== undefined) {
      seen.delete(word);
      return Promise.resolve(at);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${word} from a replica within 60 s`)),
        60_000,
      );
      waiting.set(word, (t) => {
        clearTimeout(timer);
        resolve(t);
      });
    });
  };
}

/** `ROUNDS` failovers on one backend: each time the leader is killed while a fresh replica campaigns. */
async function failovers(backend: string, start: (key: string) => Replica): Promise<number[]> {
  const key = `leader-${backend}-${process.pid}`;
  const replicas: Replica[] = [];
  const times: number[] = [];
  try {
    let leader = start(key);
    replicas.push(leader);
    await leader.next("LEADING");
    for (let round = 0; round < ROUNDS; round++) {
      const candidate = start(key);
      replicas.push(candidate);
      await candidate.next("CAMPAIGNING");
      // Let the candidate's first attempt reach the store and start waiting.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const killedAt = performance.now();
      await leader.kill();
      const leadingAt = await candidate.next("LEADING");
      if (leadingAt < killedAt) {
        throw new Error(
          `${backend}: a second replica led while the leader was alive (no exclusion)`,
        );
      }
      times.push(leadingAt - killedAt);
      leader = candidate;
    }
  } finally {
    await Promise.all(replicas.map((replica) => replica.kill()));
  }
  return times;
}

function summary(times: number[], ttlMs: number | undefined): Array<string | number> {
  const middle = median(times);
  return [middle, Math.max(...times), ttlMs === undefined ? "-" : middle / ttlMs, times.length];
}

const failover: BenchSuite = async () => {
  const rows: Array<Array<string | number>> = [];
  const directory = await mkdtemp(join(tmpdir(), "locks-failover-"));
  const redis = await startRedis();
  const etcd = await startEtcd();
  const postgres = await startPostgres();
  const mariadb = await startMariadb();
  try {
    const targets: Array<[string, string]> = [
      ["file", directory],
      ["redis", redis.url],
      ["etcd", etcd.endpoint],
      ["postgres", postgres.connectionString],
      ["mysql", mariadb.url],
    ];
    const table = createSharedLockTable();
    const threadTimes = await failovers("thread", (key) => startWorkerReplica(table, key));
    rows.push(["thread (worker_threads table)", "none", ...summary(threadTimes, undefined)]);
    for (const [backend, target] of targets) {
      const times = await failovers(backend, (key) => startReplica(backend, target, key));
      rows.push([backend, TTL_MS, ...summary(times, TTL_MS)]);
    }
  } finally {
    await Promise.allSettled([redis.stop(), etcd.stop(), postgres.stop(), mariadb.stop()]);
    await rm(directory, { recursive: true, force: true });
  }
  const table: BenchTable = {
    suite: "failover",
    title: `Leader failover: SIGKILL of the leader to the next replica's fn starting (locks.lead, ttlMs ${TTL_MS})`,
    columns: ["backend", "TTL ms", "median ms", "worst ms", "median / TTL", "failovers"],
    rows,
    notes: [
      "Each replica is its own process running locks.lead; the leader is killed with SIGKILL while another campaigns (thread: worker threads sharing a table, the leader terminate()d, releaseOnExit frees its keys).",
      "postgres and mysql hold the lock in a session the kernel closes with the process: the server frees it at once.",
      "redis, etcd and file only learn of the crash from the TTL: the key frees itself one TTL after the last extension (up to a third of a TTL earlier than the kill), then the waiting replica's next poll or notification takes it.",
    ],
  };
  return [table];
};

export default failover;
