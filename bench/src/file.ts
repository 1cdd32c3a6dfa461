/*
 * @locks/file side by side with raw proper-lockfile, in one run:
 *
 * 1. Uncontended acquire + release per second, one process, one key.
 * 2. Contended handoff between 4 processes: every critical section (10 ms)
 *    hands the lock to another process (a process that released waits until
 *    someone else has held the lock before it asks again). Reported: the
 *    handoff gap (release by one process -> grant to the next) and the CPU
 *    the waiting processes burn while they wait.
 *
 * This file is also the child process of the contended benchmark (it forks
 * itself with LOCKS_BENCH_FILE_CHILD set).
 */
import { type ChildProcess, fork } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createLocks } from "@locks/core";
import { historyNow } from "@locks/core/history";
import { fileBackend } from "@locks/file";
import { nodeChildArgs } from "@locks/testkit";
import { lock } from "proper-lockfile";
import { CpuTally, cpuCell, cpuOpsPerSecond, cpuRatio } from "./cpu.js";
import { GAP_COLUMNS, gapCells } from "./harness.js";
import type { BenchTable } from "./table.js";

type Contender = "proper-lockfile" | "file-sync" | "file-async";

const CHILD_ENV = "LOCKS_BENCH_FILE_CHILD";
const PROCESSES = 4;
const HANDOFFS = 300;
const HOLD_MS = 10;

interface ChildStats {
  readonly holds: Array<{ acquiredAt: number; releasedAt: number }>;
  /** CPU time (user + system, µs) spent inside acquire, and wall time (ms) spent there. */
  readonly waitCpuUs: number;
  readonly waitWallMs: number;
}

type ToChild = { type: "go" } | { type: "stop" };
type FromChild = { type: "ready" } | { type: "acquired" } | { type: "stats"; stats: ChildStats };

export default async function fileBench(): Promise<BenchTable[]> {
  return [await uncontended(), await contended()];
}

// --- 1. uncontended -------------------------------------------------------------

/** Where to measure: the system's temp directory, and tmpfs when there is one. */
function fileSystems(): Array<{ label: string; base: string }> {
  const found = [{ label: `${tmpdir()} (${fsType(tmpdir())})`, base: tmpdir() }];
  if (existsSync("/dev/shm") && fsType("/dev/shm") === "tmpfs" && fsType(tmpdir()) !== "tmpfs") {
    found.push({ label: "/dev/shm (tmpfs)", base: "/dev/shm" });
  }
  return found;
}

/** The file-system type of `path` (Linux: /proc/mounts, longest mount point that contains it). */
function fsType(path: string): string {
  try {
    let best = { point: "", type: "?" };
    for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [, point, type] = line.split(" ");
      if (point === undefined || type === undefined) continue;
      const inside = path === point || path.startsWith(point.endsWith("/") ? point : `${point}/`);
      if (inside && point.length > best.point.length) best = { point, type };
    }
    return best.type;
  } catch {
    return "?";
  }
}

async function uncontended(): Promise<BenchTable> {
  const rows: Array<Array<string | number>> = [];
  for (const { label, base } of fileSystems()) {
    const directory = mkdtempSync(join(base, "locks-bench-file-"));
    try {
      const raw = join(directory, "raw");
      const rawCycle = async (): Promise<void> => {
        const release = await lock(raw, { realpath: false, lockfilePath: `${raw}.lock` });
        await release();
      };
      const sync = createLocks(fileBackend({ directory: join(directory, "sync") }), {
        namespace: "bench",
      });
      const asyncIo = createLocks(
        fileBackend({ directory: join(directory, "async"), io: "async" }),
        {
          namespace: "bench",
        },
      );
      const cycle = (locks: typeof sync) => async (): Promise<void> => {
        const lease = await locks.acquire("uncontended");
        await lease.release();
      };
      // Interleaved rounds, median of each: the machine and the disk's journal make single runs noisy.
      // CPU per op over all rounds (this process: the file system's work is in its system time).
      const runs = { raw: [] as number[], sync: [] as number[], async: [] as number[] };
      const cpu = { raw: new CpuTally(), sync: new CpuTally(), async: new CpuTally() };
      for (let round = 0; round < 5; round++) {
        runs.raw.push(await cpuOpsPerSecond(rawCycle, 600, cpu.raw));
        runs.sync.push(await cpuOpsPerSecond(cycle(sync), 600, cpu.sync));
        runs.async.push(await cpuOpsPerSecond(cycle(asyncIo), 600, cpu.async));
      }
      await sync.close();
      await asyncIo.close();
      const raw50 = median(runs.raw);
      const row = (name: string, ops: number, tally: CpuTally): Array<string | number> => [
        label,
        name,
        ops,
        1e6 / ops,
        `${(raw50 / ops).toFixed(2)}x`,
        cpuCell(tally),
        cpuRatio(tally, cpu.raw),
      ];
      rows.push(
        row("proper-lockfile lock()/release()", raw50, cpu.raw),
        row("@locks/file (io: sync, default)", median(runs.sync), cpu.sync),
        row("@locks/file (io: async)", median(runs.async), cpu.async),
      );
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  }
  return {
    suite: "file",
    title: "Uncontended acquire + release, one process (median of 5 interleaved rounds)",
    columns: [
      "file system",
      "library",
      "ops/s",
      "µs per op",
      "time vs proper-lockfile",
      "CPU µs per op",
      "CPU vs proper-lockfile",
    ],
    rows,
    notes: [
      "@locks/file through createLocks(): owner-checked lease, core watchdog, fencing token (fence read and advanced per grant), proper-lockfile's mtime refresh",
      "goal: within 1.2x of raw proper-lockfile",
      "CPU µs per op: this process's user + system time over all 5 rounds (the file system's work is system time; no server)",
      `Node ${process.version}, load average ${loadavg()[0]!.toFixed(1)} at the end of the run`,
    ],
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

// --- 2. contended handoff ---------------------------------------------------------

async function contended(): Promise<BenchTable> {
  const rows: Array<Array<string | number>> = [];
  const labels: Record<Contender, string> = {
    "proper-lockfile": "proper-lockfile, polling every 1-5 ms",
    "file-sync": "@locks/file (io: sync), fs.watch wake-up",
    "file-async": "@locks/file (io: async), fs.watch wake-up",
  };
  for (const { label, base } of fileSystems()) {
    const directory = mkdtempSync(join(base, "locks-bench-file-"));
    const contenders: Contender[] =
      base === tmpdir()
        ? ["proper-lockfile", "file-sync", "file-async"]
        : ["proper-lockfile", "file-sync"];
    try {
      for (const contender of contenders) {
        const result = await runContended(contender, join(directory, contender));
        rows.push([
          label,
          labels[contender],
          result.handoffs,
          ...gapCells(result.gaps),
          result.cpuPerWaitSecondMs,
          result.cpuPerHandoffUs,
        ]);
      }
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  }
  return {
    suite: "file",
    title: `Contended handoff between ${PROCESSES} processes (${HOLD_MS} ms critical sections, each handed to another process)`,
    columns: [
      "file system",
      "library",
      "handoffs",
      ...GAP_COLUMNS,
      "waiter CPU (ms per s waited)",
      "waiter CPU per handoff (µs)",
    ],
    rows,
    notes: [
      "gap: from the holder's release() call to the next process holding the lock (one monotonic clock for the processes of the machine); p10, median, p90, p99 of the run's gaps (nearest rank)",
      "waiter CPU: user + system CPU of the 4 processes while inside acquire(), over the wall time they spent there (includes the winning attempt)",
      "goal: a gap no worse than proper-lockfile polling every 1-5 ms, with waiters that sleep",
      `load average ${loadavg()[0]!.toFixed(1)} at the end of the run (2 cores, shared with other work)`,
    ],
  };
}

interface ContendedResult {
  readonly handoffs: number;
  /** Every gap, ms. */
  readonly gaps: readonly number[];
  readonly cpuPerWaitSecondMs: number;
  readonly cpuPerHandoffUs: number;
}

async function runContended(contender: Contender, directory: string): Promise<ContendedResult> {
  const self = fileURLToPath(import.meta.url);
  mkdirSync(directory, { recursive: true });
  const children: ChildProcess[] = [];
  const stats: ChildStats[] = [];
  let acquisitions = 0;
  // Children that released and wait to be told that someone else has held the lock.
  const parked = new Set<number>();
  const done = new Promise<void>((resolve, reject) => {
    for (let i = 0; i < PROCESSES; i++) {
      const child = fork(self, [], {
        execArgv: nodeChildArgs,
        env: { ...process.env, [CHILD_ENV]: contender, LOCKS_BENCH_FILE_DIR: directory },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      });
      children.push(child);
      child.on("error", reject);
      child.on("exit", (code) => {
        if (code !== 0 && stats.length < PROCESSES)
          reject(new Error(`bench child exited with ${code}`));
      });
      child.on("message", (message: FromChild) => {
        if (message.type === "acquired") {
          acquisitions++;
          for (const other of [...parked]) {
            if (other === i) continue;
            parked.delete(other);
            children[other]!.send({
              type: acquisitions >= HANDOFFS ? "stop" : "go",
            } satisfies ToChild);
          }
          // After its release, this child waits until another one has held the lock.
          parked.add(i);
        } else if (message.type === "stats") {
          stats.push(message.stats);
          if (stats.length === PROCESSES) resolve();
        } else if (message.type === "ready") {
          child.send({ type: "go" } satisfies ToChild);
        }
      });
    }
  });
  // The last holder is parked with nobody left to wake it.
  const stopper = setInterval(() => {
    if (acquisitions < HANDOFFS) return;
    for (const i of [...parked]) {
      parked.delete(i);
      children[i]!.send({ type: "stop" } satisfies ToChild);
    }
  }, 50);
  try {
    await done;
  } finally {
    clearInterval(stopper);
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  }
  const holds = stats.flatMap((s) => s.holds).sort((a, b) => a.acquiredAt - b.acquiredAt);
  const gaps: number[] = [];
  for (let i = 1; i < holds.length; i++) gaps.push(holds[i]!.acquiredAt - holds[i - 1]!.releasedAt);
  gaps.sort((a, b) => a - b);
  const cpuUs = stats.reduce((sum, s) => sum + s.waitCpuUs, 0);
  const wallMs = stats.reduce((sum, s) => sum + s.waitWallMs, 0);
  return {
    handoffs: gaps.length,
    gaps,
    cpuPerWaitSecondMs: cpuUs / 1000 / (wallMs / 1000),
    cpuPerHandoffUs: cpuUs / Math.max(1, gaps.length),
  };
}

// --- the child process ---------------------------------------------------------------

async function child(contender: Contender, directory: string): Promise<void> {
  const holds: Array<{ acquiredAt: number; releasedAt: number }> = [];
  let waitCpuUs = 0;
  let waitWallMs = 0;
  const target = join(directory, "contended");
  let acquire: () => Promise<() => Promise<void>>;
  let close = async (): Promise<void> => undefined;
  if (contender === "proper-lockfile") {
    acquire = () =>
      lock(target, {
        realpath: false,
        lockfilePath: `${target}.lock`,
        // `forever` repeats the last delay: a large `retries` would precompute that many delays per call.
        retries: { forever: true, retries: 4, minTimeout: 1, maxTimeout: 5, factor: 1.5 },
      });
  } else {
    const locks = createLocks(
      fileBackend({ directory, io: contender === "file-sync" ? "sync" : "async" }),
      { namespace: "bench" },
    );
    acquire = async () => {
      const lease = await locks.acquire("contended");
      return () => lease.release();
    };
    close = () => locks.close();
  }
  // Commands can arrive while this process still holds the lock: queue them.
  const inbox: ToChild[] = [];
  let delivered: (() => void) | undefined;
  process.on("message", (m: ToChild) => {
    inbox.push(m);
    delivered?.();
  });
  const next = async (): Promise<ToChild> => {
    while (inbox.length === 0) await new Promise<void>((resolve) => (delivered = resolve));
    return inbox.shift()!;
  };
  process.send?.({ type: "ready" } satisfies FromChild);
  for (;;) {
    const command = await next();
    if (command.type === "stop") break;
    const cpu = process.cpuUsage();
    const started = performance.now();
    const release = await acquire();
    const acquiredAt = historyNow();
    const spent = process.cpuUsage(cpu);
    waitCpuUs += spent.user + spent.system;
    waitWallMs += performance.now() - started;
    process.send?.({ type: "acquired" } satisfies FromChild);
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
    const releasedAt = historyNow();
    await release();
    holds.push({ acquiredAt, releasedAt });
  }
  await close();
  process.send?.({ type: "stats", stats: { holds, waitCpuUs, waitWallMs } } satisfies FromChild);
  process.disconnect?.();
}

const role = process.env[CHILD_ENV];
if (role === "proper-lockfile" || role === "file-sync" || role === "file-async") {
  await child(role, process.env.LOCKS_BENCH_FILE_DIR ?? "");
}
