import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { nodeChildArgs, startEtcd, startMariadb, startPostgres, startRedis } from "@locks/testkit";
import { median } from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * Leader failover per backend: replicas run `locks.lead` on one key in
 * separate processes; the leader is killed with SIGKILL (no release, no
 * clean-up) and the time to the next replica's `fn` starting is measured,
 * against the lease TTL. A store that ties the lock to a session the kernel
 * closes with the process (postgres, MariaDB) fails over at once; one that
 * only has the TTL (redis, etcd, file) in about one TTL.
 */

const TTL_MS = 2_000;
const ROUNDS = 4;
const child = fileURLToPath(new URL("./failover/child.ts", import.meta.url));

interface Replica {
  readonly process: ChildProcess;
  /** Resolves with the time (performance.now()) the replica printed `word`. */
  next(word: "CAMPAIGNING" | "LEADING"): Promise<number>;
}

function startReplica(backend: string, target: string, key: string): Replica {
  const proc = spawn(
    process.execPath,
    [...nodeChildArgs, child, backend, target, key, String(TTL_MS)],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const waiting = new Map<string, (at: number) => void>();
  const seen = new Map<string, number>();
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    const at = performance.now();
    const word = line.split(" ")[0]!;
    const resolve = waiting.get(word);
    if (resolve === undefined) seen.set(word, at);
    else {
      waiting.delete(word);
      resolve(at);
    }
  });
  return {
    process: proc,
    next(word) {
      const at = seen.get(word);
      if (at !== undefined) {
        seen.delete(word);
        return Promise.resolve(at);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no ${word} from ${backend} replica within 60 s`)),
          60_000,
        );
        waiting.set(word, (t) => {
          clearTimeout(timer);
          resolve(t);
        });
      });
    },
  };
}

function kill(replica: Replica): Promise<void> {
  return new Promise((resolve) => {
    if (replica.process.exitCode !== null || replica.process.signalCode !== null) resolve();
    replica.process.once("exit", () => resolve());
    replica.process.kill("SIGKILL");
  });
}

/** `ROUNDS` failovers on one backend: each time the leader is killed while a fresh replica campaigns. */
async function failovers(backend: string, target: string): Promise<number[]> {
  const key = `leader-${backend}-${process.pid}`;
  const replicas: Replica[] = [];
  const times: number[] = [];
  try {
    let leader = startReplica(backend, target, key);
    replicas.push(leader);
    await leader.next("LEADING");
    for (let round = 0; round < ROUNDS; round++) {
      const candidate = startReplica(backend, target, key);
      replicas.push(candidate);
      await candidate.next("CAMPAIGNING");
      // Let the candidate's first attempt reach the store and start waiting.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const killedAt = performance.now();
      await kill(leader);
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
    await Promise.all(replicas.map(kill));
  }
  return times;
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
    for (const [backend, target] of targets) {
      const times = await failovers(backend, target);
      const worst = Math.max(...times);
      rows.push([backend, TTL_MS, median(times), worst, median(times) / TTL_MS, times.length]);
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
      "Each replica is its own process running locks.lead; the leader is killed with SIGKILL while another campaigns.",
      "postgres and mysql hold the lock in a session the kernel closes with the process: the server frees it at once.",
      "redis, etcd and file only learn of the crash from the TTL: the key frees itself one TTL after the last extension (up to a third of a TTL earlier than the kill), then the waiting replica's next poll or notification takes it.",
    ],
  };
  return [table];
};

export default failover;
