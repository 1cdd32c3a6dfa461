import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createLocks, type Lease } from "@locks/core";
import {
  countRequests,
  countRequestsByMethod,
  countStatements,
  type EtcdServer,
  monitorRedis,
  nodeChildArgs,
  startEtcd,
  startMariadb,
  startPostgres,
  startRedis,
} from "@locks/testkit";
import { backendFor, epochNow, SERVER_BACKENDS, type ServerBackend } from "./backends.js";
import { median, processCpuUs, sleep, sum } from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * Waiting at scale (issue 18). Per server backend: one holder (this process)
 * holds a key with a long lease and no watchdog; W waiters split over 4 child
 * processes (one Locks client over one backend instance each) all acquire
 * it. After a settle time, the server's requests over an idle window give the
 * idle cost per waiter per second (less what the holder and the children's
 * sessions cost alone, measured before any wait); then the holder releases
 * and each waiter releases at once on its grant: requests per handoff over
 * the first handoffs, and the median gap between grants. Requests are the
 * server's own count (@locks/testkit countRequests; postgres: statements).
 *
 * Then 10,000 waiters on one key in one client (thread in-process, redis):
 * heap per waiter, CPU per handoff and per abort of a middle waiter, at 100
 * and 10,000 waiters.
 */

/** `WAITING_QUICK=1`: a smoke run in a minute or two (fewer waiters, short windows); not for the tables. */
const QUICK = process.env.WAITING_QUICK === "1";
const WAITERS = QUICK ? [8, 20, 80] : [20, 200, 2_000];
const PROCESSES = 4;
const BASELINE_MS = QUICK ? 1_000 : 3_000;
const IDLE_MS = QUICK ? 3_000 : 10_000;
const SETTLE_MS = QUICK ? 1_000 : 3_000;
const SETTLE_MAX_MS = QUICK ? 3_000 : 15_000;
const HANDOFFS = 200;
const HANDOFF_DEADLINE_MS = 30_000;
const LINE_DEADLINE_MS = 120_000;
const HOLD_TTL_MS = 600_000;
const CROWD = QUICK ? [100, 1_000] : [100, 10_000];
const GOAL_IDLE = 0.05;
const GOAL_HANDOFF = 3;

/** `WAITING_ONLY="etcd,crowd"`: only these backends (and "crowd": the second table). */
const only = (process.env.WAITING_ONLY ?? "").split(",").filter((name) => name !== "");

/** Progress on stderr: the suite runs for minutes. */
function progress(what: string): void {
  process.stderr.write(`waiting: ${what} (${(performance.now() / 1000).toFixed(0)} s)\n`);
}

const childFile = fileURLToPath(new URL("./waiting/child.ts", import.meta.url));
const crowdFile = fileURLToPath(new URL("./waiting/crowd.ts", import.meta.url));

/** A child process's stdout, line by line: the next line starting with a word, and every GRANT. */
class WaiterProcess {
  readonly proc: ChildProcess;
  readonly #lines = new Map<string, string[]>();
  readonly #waiting = new Map<string, (line: string) => void>();

  constructor(backend: string, target: string, onGrant: (at: number) => void) {
    this.proc = spawn(process.execPath, [...nodeChildArgs, childFile, backend, target], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    createInterface({ input: this.proc.stdout! }).on("line", (line) => {
      const word = line.split(" ")[0]!;
      if (word === "GRANT") return onGrant(Number(line.slice(6)));
      const resolve = this.#waiting.get(word);
      if (resolve === undefined) this.#lines.set(word, [...(this.#lines.get(word) ?? []), line]);
      else {
        this.#waiting.delete(word);
        resolve(line);
      }
    });
  }

  next(word: string): Promise<string> {
    const early = this.#lines.get(word)?.shift();
    if (early !== undefined) return Promise.resolve(early);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${word} from waiter process ${this.proc.pid}`)),
        LINE_DEADLINE_MS,
      );
      this.#waiting.set(word, (line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  send(line: string): void {
    this.proc.stdin!.write(`${line}\n`);
  }

  /** Asks it to close its client and exit; SIGKILL after 10 s. */
  async exit(): Promise<void> {
    const proc = this.proc;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    this.send("exit");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** `pid` and its child processes (postgres: the postmaster and its sessions). */
function processTree(pid: number): number[] {
  const pids = [pid];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(
        readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1]!.split(" ")[1],
      );
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** CPU µs of a set of processes now (those gone count 0: read them over windows where they live). */
function cpuOf(pids: readonly number[]): number {
  return sum(pids.map((pid) => processCpuUs(pid) ?? 0));
}

/** CPU time of the waiting clients and of the server. */
interface Cpu {
  readonly clients: number;
  readonly server: number;
}

/** CPU µs between two readings, per `n` (µs per item; per ms of time: ms per s). */
function cpuPer(before: Cpu, after: Cpu, n: number): Cpu {
  return {
    clients: (after.clients - before.clients) / n,
    server: (after.server - before.server) / n,
  };
}

function cpuText(cpu: Cpu): string {
  const f = (v: number) => (v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1));
  return `${f(cpu.clients)} + ${f(cpu.server)} = ${f(cpu.clients + cpu.server)}`;
}

/** A server under test, as the waiting runs see it. */
interface Served {
  readonly target: string;
  /** The server's request count (commands, gRPC messages, statements, questions). */
  count(): Promise<number>;
  /** The server's processes, for CPU. */
  pids(): number[];
  /** Requests by method, where the server tells (etcd). */
  byMethod?(): Promise<Record<string, number>>;
}

interface WaitingRow {
  readonly backend: string;
  readonly waiters: number;
  readonly baselinePerSecond: number;
  readonly settleMs: number;
  readonly idlePerSecond: number;
  readonly idlePerWaiter: number;
  /** CPU ms per second: the children, the server. */
  readonly idleCpuMsPerSecond: Cpu;
  readonly handoffs: number;
  readonly perHandoff: number;
  readonly cpuUsPerHandoff: Cpu;
  readonly gapMs: number;
  readonly byMethod?: string;
}

function methodDelta(before: Record<string, number>, after: Record<string, number>): string {
  return Object.entries(after)
    .map(([method, n]) => [method, n - (before[method] ?? 0)] as const)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([method, n]) => `${method} ${n}`)
    .join(", ");
}

/**
 * Waits until every wait has made its first attempts (a store queue: taken
 * its place): at least `SETTLE_MS`, then until a second's requests are within
 * the idle goal, or `SETTLE_MAX_MS` at most (code that polls per waiter never
 * gets there). Resolves with the time it took.
 */
async function settle(served: Served, waiters: number): Promise<number> {
  const start = performance.now();
  await sleep(SETTLE_MS);
  while (performance.now() - start < SETTLE_MAX_MS) {
    const before = await served.count();
    await sleep(1_000);
    if ((await served.count()) - before <= waiters * GOAL_IDLE) break;
  }
  return performance.now() - start;
}

/** Every waiter count on one backend, with the same 4 child processes. */
async function waitingRuns(backend: ServerBackend, served: Served): Promise<WaitingRow[]> {
  const grants: number[] = [];
  let onGrant: () => void = () => {};
  const children = Array.from(
    { length: PROCESSES },
    () =>
      new WaiterProcess(backend, served.target, (at) => {
        grants.push(at);
        onGrant();
      }),
  );
  const holder = createLocks(await backendFor(backend, served.target), {
    namespace: "waiting",
    ttlMs: HOLD_TTL_MS,
  });
  const rows: WaitingRow[] = [];
  try {
    await Promise.all(children.map((c) => c.next("READY")));
    await (await holder.acquire(`warm-${process.pid}`)).release();
    const clientPids = children.map((c) => c.proc.pid!);
    // What the holder and the children's idle clients cost alone.
    const b0 = await served.count();
    await sleep(BASELINE_MS);
    const baselinePerSecond = ((await served.count()) - b0) / (BASELINE_MS / 1000);

    for (const waiters of WAITERS) {
      const key = `held-${waiters}-${process.pid}`;
      progress(`${backend}, ${waiters} waiters`);
      const lease: Lease = await holder.acquire(key, { autoExtend: false });
      for (const child of children) child.send(`wait ${key} ${waiters / PROCESSES}`);
      await Promise.all(children.map((c) => c.next("WAITING")));
      const settleMs = await settle(served, waiters);

      const serverPids = served.pids();
      const cpuNow = (): Cpu => ({ clients: cpuOf(clientPids), server: cpuOf(serverPids) });
      const methods0 = await served.byMethod?.();
      const cpu0 = cpuNow();
      const c0 = await served.count();
      const t0 = performance.now();
      await sleep(IDLE_MS);
      const c1 = await served.count();
      const seconds = (performance.now() - t0) / 1000;
      const cpu1 = cpuNow();
      const methods1 = await served.byMethod?.();
      const idlePerSecond = (c1 - c0) / seconds;

      grants.length = 0;
      const wanted = Math.min(HANDOFFS, waiters);
      const enough = new Promise<void>((resolve) => {
        onGrant = () => {
          if (grants.length >= wanted) resolve();
        };
      });
      const c2 = await served.count();
      const cpu2 = cpuNow();
      const releasedAt = epochNow();
      await lease.release();
      const deadline = sleep(HANDOFF_DEADLINE_MS);
      await Promise.race([enough, deadline]);
      const c3 = await served.count();
      const cpu3 = cpuNow();
      const handoffs = grants.length;
      onGrant = () => {};
      const sorted = [...grants].sort((a, b) => a - b);
      const gaps = sorted.map((at, i) => at - (i === 0 ? releasedAt : sorted[i - 1]!));

      progress(`${backend}, ${waiters} waiters: ${handoffs} handoffs`);
      for (const child of children) child.send("abort");
      await Promise.all(children.map((c) => c.next("IDLE")));
      rows.push({
        backend,
        waiters,
        baselinePerSecond,
        settleMs,
        idlePerSecond,
        idlePerWaiter: Math.max(0, idlePerSecond - baselinePerSecond) / waiters,
        idleCpuMsPerSecond: cpuPer(cpu0, cpu1, seconds * 1000),
        handoffs,
        perHandoff: (c3 - c2) / handoffs,
        cpuUsPerHandoff: cpuPer(cpu2, cpu3, handoffs),
        gapMs: median(gaps),
        ...(methods0 && methods1 ? { byMethod: methodDelta(methods0, methods1) } : {}),
      });
    }
  } finally {
    await holder.close().catch(() => {});
    await Promise.all(children.map((c) => c.exit()));
  }
  return rows;
}

interface CrowdRow {
  readonly size: number;
  readonly heapPlain: number;
  readonly heapPerWaiter: number;
  readonly abortCpuUs: number;
  readonly handoffCpuUs: number;
}

/** The crowd child on one backend: one JSON line per size. */
function crowdRun(backend: string, target: string, serverPid: number): Promise<CrowdRow[]> {
  progress(`${backend}, crowd`);
  const proc = spawn(
    process.execPath,
    [
      ...nodeChildArgs,
      "--expose-gc",
      crowdFile,
      backend,
      target,
      String(serverPid),
      ...CROWD.map(String),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const rows: CrowdRow[] = [];
  createInterface({ input: proc.stdout! }).on("line", (line) => rows.push(JSON.parse(line)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), 120_000);
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(rows);
      else reject(new Error(`crowd run on ${backend} ended with ${code ?? signal}`));
    });
  });
}

function verdict(met: boolean): string {
  return met ? "met" : "missed";
}

const waiting: BenchSuite = async () => {
  const rows: WaitingRow[] = [];
  const crowd: Array<[string, CrowdRow[]]> = [];
  const redis = await startRedis();
  const etcd = await startEtcd();
  const postgres = await startPostgres({
    settings: { shared_preload_libraries: "pg_stat_statements" },
  });
  const mariadb = await startMariadb();
  const monitor = await monitorRedis(redis);
  try {
    const etcdServed = (server: EtcdServer): Served => ({
      target: server.endpoint,
      count: () => countRequests(server),
      pids: () => [server.pid],
      byMethod: () => countRequestsByMethod(server),
    });
    const redisServed: Served = {
      target: redis.url,
      count: async () => monitor.requests,
      pids: () => [redis.pid],
    };
    const servers: Record<ServerBackend, Served> = {
      redis: redisServed,
      "redis fair": redisServed,
      etcd: etcdServed(etcd),
      postgres: {
        target: postgres.connectionString,
        count: () => countStatements(postgres),
        pids: () => processTree(postgres.pid),
      },
      mysql: {
        target: mariadb.url,
        count: () => countRequests(mariadb),
        pids: () => [mariadb.pid],
      },
    };
    for (const backend of SERVER_BACKENDS) {
      if (only.length === 0 || only.includes(backend)) {
        rows.push(...(await waitingRuns(backend, servers[backend])));
      }
    }
    if (only.length === 0 || only.includes("crowd")) {
      crowd.push(["thread (in-process)", await crowdRun("thread", "-", 0)]);
      crowd.push(["redis", await crowdRun("redis", redis.url, redis.pid)]);
    }
  } finally {
    monitor.close();
    await Promise.allSettled([redis.stop(), etcd.stop(), postgres.stop(), mariadb.stop()]);
  }

  const idleTable: BenchTable = {
    suite: "waiting",
    title: `Idle waiters: W waiters in ${PROCESSES} processes on one held key`,
    columns: [
      "backend",
      "waiters",
      "alone req/s",
      "settle s",
      "idle req/s",
      "idle req / waiter / s",
      "idle CPU ms/s: clients + server",
      `goal ≤ ${GOAL_IDLE}`,
    ],
    rows: rows.map((r) => [
      r.backend,
      r.waiters,
      r.baselinePerSecond,
      (r.settleMs / 1000).toFixed(0),
      r.idlePerSecond,
      r.idlePerWaiter,
      cpuText(r.idleCpuMsPerSecond),
      verdict(r.idlePerWaiter <= GOAL_IDLE),
    ]),
    notes: [
      `Requests are the server's own count: redis MONITOR (commands clients send: an EVALSHA is one, the commands its script runs none; INFO's total_commands_processed counts those too; MONITOR costs redis-server a little CPU per command), etcd gRPC request messages (unary calls and stream messages: watch creates, lease keep-alives), postgres statements (pg_stat_statements, BEGIN and COMMIT included), mariadb Questions.`,
      `"alone": the holder and the ${PROCESSES} children's idle clients before any wait, subtracted from the idle rate per waiter. What a process pays per key it waits on (such as the bounded fallback check) counts in the idle rate and is shared by that process's waiters, so per waiter it is largest with the fewest waiters. Idle window ${IDLE_MS / 1000} s after the settle time: ${SETTLE_MS / 1000} s, then until a second's requests are within the idle goal (${SETTLE_MAX_MS / 1000} s at most); the holder's lease has no watchdog (ttl ${HOLD_TTL_MS / 60_000} min). CPU: the ${PROCESSES} children + the server, ms per second of the window.`,
      ...rows
        .filter((r) => r.byMethod)
        .map((r) => `etcd idle by method, ${r.waiters} waiters: ${r.byMethod || "none"}`),
    ],
  };
  const handoffTable: BenchTable = {
    suite: "waiting",
    title: `Handoffs from W waiters in ${PROCESSES} processes on one key`,
    columns: [
      "backend",
      "waiters",
      "handoffs",
      "req / handoff",
      "CPU µs / handoff: clients + server",
      "median gap ms",
      `goal ≤ ${GOAL_HANDOFF}`,
    ],
    rows: rows.map((r) => [
      r.backend,
      r.waiters,
      r.handoffs,
      ...(r.handoffs > 0
        ? [r.perHandoff, cpuText(r.cpuUsPerHandoff), r.gapMs, verdict(r.perHandoff <= GOAL_HANDOFF)]
        : ["-", "-", "-", `stalled: no grant within ${HANDOFF_DEADLINE_MS / 1000} s`]),
    ]),
    notes: [
      `The waiters of the idle table above: the holder releases, each waiter releases at once on its grant; requests (counted as above) and CPU (the ${PROCESSES} children + the server) over the first ${HANDOFFS} handoffs (all of them with fewer waiters), the rest aborted afterwards. Gap: one grant to the next, from the children's clocks.`,
    ],
  };
  const crowdRows = crowd.flatMap(([backend, sizes]) =>
    sizes.map((s) => [
      backend,
      s.size.toLocaleString("en-US"),
      s.heapPlain,
      s.heapPerWaiter,
      s.handoffCpuUs,
      s.handoffCpuUs / sizes[0]!.handoffCpuUs,
      s.abortCpuUs,
      s.abortCpuUs / sizes[0]!.abortCpuUs,
    ]),
  );
  const crowdTable: BenchTable = {
    suite: "waiting",
    title: "10,000 waiters on one key in one client",
    columns: [
      "backend",
      "waiters",
      "heap B / waiter",
      "with a signal",
      "CPU µs / handoff",
      `vs ${CROWD[0]}`,
      "CPU µs / abort (middle waiter)",
      `vs ${CROWD[0]}`,
    ],
    rows: crowdRows,
    notes: [
      "Heap: heapUsed after gc with the waiters pending less before, per waiter, less what the bench itself keeps per waiter (a handler promise; with a signal, its AbortController too). With a signal: each waiter passes its own AbortSignal (the aborts below need one). Goal ≤ 2 KiB.",
      "CPU: the client process plus redis-server, over 50 handoffs (each waiter releases at once on its grant) and over 20 aborts of waiters in the middle of the queue, one at a time. Goal: flat from 100 to 10,000 waiters.",
    ],
  };
  return [idleTable, handoffTable, crowdTable];
};

export default waiting;
