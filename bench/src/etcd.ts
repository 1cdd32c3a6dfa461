import { etcdBackend } from "@locks/etcd";
import { type EtcdServer, httpRequest, startEtcd } from "@locks/testkit";
import { Etcd3, EtcdLockFailedError } from "etcd3";
import { CpuTally, cpuCell, cpuRatio, measured } from "./cpu.js";
import {
  build,
  type Contender,
  closeAll,
  cycle,
  GAP_COLUMNS,
  gapCells,
  type HandoffResult,
  handoffs,
  locksContender,
  sleep,
} from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * @locks/etcd against etcd3's own client.lock() and two raw floors, side by
 * side in one run on one local etcd (started by the testkit, or ETCD_ENDPOINTS):
 *
 * 1. uncontended acquire + release per second (one client, one key):
 *    - raw put + delete: the least any lock can do (no lease, no condition);
 *    - raw lease + txn: one lease granted up front, then a conditional put
 *      (create_revision == 0) under it and a delete: the floor for a lock
 *      whose keys expire with a session lease;
 * 2. handoffs between 8 clients on one key, each release passing the lock to
 *    another client: handoffs per second, the gap from the release() call to
 *    the next holder's grant, and what the server did per handoff (raft
 *    proposals, i.e. writes; watch events sent; requests received), read from
 *    etcd's /metrics around a window of the run.
 */

const UNCONTENDED_MS = 400;
const ROUNDS = 7;
const WARMUP_CYCLES = 100;
const HANDOFF_MS = 1_500;
const HANDOFF_ROUNDS = 3;
const TTL_MS = 30_000;
const POLL_MS = 1;
/**
 * TTL of etcd3's locks. Its cost per lock does not depend on it, but each
 * etcd3 lease leaves a timer of its TTL running after release, which keeps the
 * process alive that long after the run.
 */
const ETCD3_LOCK_TTL_S = 5;

// ---------------------------------------------------------------- contenders

/** put + delete: no lease, no condition; waiting is not possible (used uncontended only). */
function putDeleteContender(hosts: string[], key: string): Contender {
  const client = new Etcd3({ hosts });
  const k = Buffer.from(key);
  const v = Buffer.from("x");
  return {
    acquire: async () => {
      await client.kv.put({ key: k, value: v });
      return () => client.kv.deleteRange({ key: k });
    },
    close: async () => client.close(),
  };
}

/** One lease per client, kept alive by etcd3; take = txn(create == 0 -> put under the lease); wait = poll. */
async function leaseTxnContender(hosts: string[], key: string): Promise<Contender> {
  const client = new Etcd3({ hosts });
  const lease = client.lease(TTL_MS / 1000);
  const id = await lease.grant();
  const k = Buffer.from(key);
  const v = Buffer.from("x");
  return {
    acquire: async () => {
      for (;;) {
        const reply = await client.kv.txn({
          compare: [{ key: k, target: "Create", result: "Equal", create_revision: 0 }],
          success: [{ request_put: { key: k, value: v, lease: id } }],
          failure: [],
        });
        if (reply.succeeded) return () => client.kv.deleteRange({ key: k });
        await sleep(POLL_MS);
      }
    },
    close: async () => {
      await lease.revoke().catch(() => undefined);
      client.close();
    },
  };
}

/** etcd3's Lock: a new lease per acquire, revoked on release; it never waits, so retry. */
function etcd3LockContender(hosts: string[], key: string): Contender {
  const client = new Etcd3({ hosts });
  return {
    acquire: async () => {
      for (;;) {
        const lock = client.lock(key).ttl(ETCD3_LOCK_TTL_S);
        try {
          await lock.acquire();
          return () => lock.release();
        } catch (error) {
          if (!(error instanceof EtcdLockFailedError)) throw error;
          await sleep(POLL_MS);
        }
      }
    },
    close: async () => client.close(),
  };
}

function oursContender(hosts: string[], key: string): Contender {
  return locksContender(etcdBackend({ hosts }), key, { ttlMs: TTL_MS });
}

// ---------------------------------------------------------------- measurements

/** Cycles of `fn` over about `ms`. */
async function cyclesFor(fn: () => Promise<unknown>, ms: number): Promise<number> {
  let cycles = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    await fn();
    cycles++;
  }
  return cycles;
}

/** One contender's uncontended figures: its best round, and its CPU over all rounds. */
interface Uncontended {
  readonly best: number;
  readonly cpu: CpuTally;
}

/**
 * Uncontended cycles per second of each contender: rounds interleaved in a
 * rotating order (so that load from elsewhere on the machine hits all of them
 * alike), best round kept; and CPU per cycle over all rounds, this process's
 * and the etcd server's (`pids`).
 */
async function uncontended(
  makers: ReadonlyArray<() => Contender | Promise<Contender>>,
  pids: readonly number[],
): Promise<Uncontended[]> {
  const contenders: Contender[] = [];
  for (const make of makers) contenders.push(await make());
  try {
    for (const c of contenders) for (let i = 0; i < WARMUP_CYCLES; i++) await cycle(c)();
    const best = contenders.map(() => 0);
    const cpu = contenders.map(() => new CpuTally(pids));
    for (let round = 0; round < ROUNDS; round++) {
      // Rotated order, so that no one always runs right after the same neighbour
      // (etcd3's lock leaves the server busy revoking leases for a moment).
      for (let j = 0; j < contenders.length; j++) {
        const i = (j + round) % contenders.length;
        const once = cycle(contenders[i]!);
        const perSecond = await measured(() => cyclesFor(once, UNCONTENDED_MS), cpu[i]!);
        best[i] = Math.max(best[i]!, perSecond);
      }
    }
    return best.map((b, i) => ({ best: b, cpu: cpu[i]! }));
  } finally {
    await closeAll(contenders);
  }
}

/** Counters from etcd's Prometheus endpoint. */
async function metrics(endpoint: string): Promise<Map<string, number>> {
  const reply = await httpRequest(`${endpoint}/metrics`, { timeoutMs: 5_000 });
  const values = new Map<string, number>();
  for (const line of reply.body.split("\n")) {
    if (line.startsWith("#") || line.length === 0) continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

/** Requests the server handled, by method, e.g. "Txn", "Range", "DeleteRange", "LeaseGrant". */
function requests(m: Map<string, number>): Map<string, number> {
  const byMethod = new Map<string, number>();
  for (const [name, value] of m) {
    const match = /^grpc_server_handled_total\{grpc_code="[^"]*",grpc_method="([^"]+)"/.exec(name);
    if (match === null) continue;
    byMethod.set(match[1]!, (byMethod.get(match[1]!) ?? 0) + value);
  }
  // The keepalive and watch streams count once when they end: count their messages instead.
  for (const [name, value] of m) {
    const match = /^grpc_server_msg_received_total\{grpc_method="(LeaseKeepAlive|Watch)"/.exec(
      name,
    );
    if (match !== null) byMethod.set(match[1]!, value);
  }
  return byMethod;
}

interface EtcdHandoffs extends HandoffResult {
  /** Raft proposals (writes, lease grants and revokes included) per handoff. */
  readonly writes: number;
  /** Watch events the server sent per handoff. */
  readonly events: number;
  /** Requests (and stream messages) per handoff, by method. */
  readonly calls: string;
}

/**
 * Handoffs (each release passes the lock to a client already waiting), with
 * what the server did per handoff, from its metrics around the counted window.
 */
async function handoffRun(
  endpoint: string,
  contenders: readonly Contender[],
  ms: number,
): Promise<EtcdHandoffs> {
  let before = new Map<string, number>();
  let after = new Map<string, number>();
  const run = await handoffs(contenders, {
    ms,
    queueMs: 300,
    window: {
      start: async () => {
        before = await metrics(endpoint);
      },
      stop: async () => {
        after = await metrics(endpoint);
      },
    },
  });
  const counted = run.handoffs;
  const delta = (name: string): number => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  const reqBefore = requests(before);
  const calls = [...requests(after)]
    .map(([method, n]) => [method, (n - (reqBefore.get(method) ?? 0)) / counted] as const)
    .filter(([, n]) => n >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .map(([method, n]) => `${method} ${n.toFixed(1)}`)
    .join(", ");
  return {
    ...run,
    writes: delta("etcd_server_proposals_committed_total") / counted,
    events: delta("etcd_debugging_mvcc_events_total") / counted,
    calls,
  };
}

// ---------------------------------------------------------------- the suite

const suite: BenchSuite = async () => {
  const fromEnv = process.env.ETCD_ENDPOINTS?.split(",").filter(Boolean);
  let server: EtcdServer | undefined;
  if (fromEnv === undefined || fromEnv.length === 0) server = await startEtcd();
  const hosts = fromEnv ?? [server!.endpoint];
  const endpoint = hosts[0]!.startsWith("http") ? hosts[0]! : `http://${hosts[0]}`;
  const run = Math.random().toString(36).slice(2);
  const key = (name: string): string => `bench/${run}/${name}`;
  const tables: BenchTable[] = [];
  try {
    // 1. Uncontended.
    // The server's CPU is read from /proc: only for a server started here.
    const pids = server === undefined ? [] : [server.pid];
    const [putDelete, floor, etcd3Lock, ours] = (await uncontended(
      [
        () => putDeleteContender(hosts, key("put-delete")),
        () => leaseTxnContender(hosts, key("lease-txn")),
        () => etcd3LockContender(hosts, key("etcd3-lock")),
        () => oursContender(hosts, key("ours")),
      ],
      pids,
    )) as [Uncontended, Uncontended, Uncontended, Uncontended];
    const urow = (name: string, r: Uncontended): Array<string | number> => [
      name,
      r.best,
      `${(floor.best / r.best).toFixed(2)}x`,
      `${(r.best / putDelete.best).toFixed(2)}x`,
      cpuCell(r.cpu),
      cpuRatio(r.cpu, floor.cpu),
    ];
    const cpuVsFloor = ours.cpu.total / floor.cpu.total;
    tables.push({
      suite: "etcd",
      title: "etcd: uncontended acquire + release (one client, one key, local etcd 3.4)",
      columns: [
        "library",
        "cycles/s",
        "time vs lease+txn floor",
        "vs put+delete",
        "CPU µs per cycle: client + server",
        "CPU vs floor",
      ],
      rows: [
        urow("raw put + delete (no lease, no condition)", putDelete),
        urow("raw lease + txn (floor: one lease, conditional put, delete)", floor),
        urow("etcd3 client.lock() (lease per lock)", etcd3Lock),
        urow("@locks/etcd", ours),
      ],
      notes: [
        `goal: @locks/etcd within 1.15x of the lease + txn floor's CPU per cycle: ${cpuVsFloor.toFixed(2)}x (${cpuVsFloor <= 1.15 ? "met" : "not met"}); best rounds' wall clock: ${(floor.best / ours.best).toFixed(2)}x`,
        `cycles/s: best of ${ROUNDS} interleaved rounds of ${UNCONTENDED_MS} ms; CPU per cycle: all rounds, this process (process.cpuUsage) + etcd (/proc/<pid>/stat, 10 ms ticks)`,
        "@locks/etcd includes the core's lease (validation, owner token, watchdog timer) and its own local-TTL timer",
        "etcd3's lock grants and revokes a lease per acquire (4 requests per cycle, 3 of them writes)",
      ],
    });

    // 2. Handoffs between 8 clients.
    // Each library on a fresh server (unless ETCD_ENDPOINTS is set): what one run leaves
    // behind (leases, revisions, index entries) must not slow the next one down.
    const eight = async (
      make: (hosts: string[], i: number) => Contender | Promise<Contender>,
    ): Promise<EtcdHandoffs> => {
      const fresh = fromEnv === undefined || fromEnv.length === 0 ? await startEtcd() : undefined;
      const on = fresh === undefined ? hosts : [fresh.endpoint];
      const contenders = await build(8, (i) => make(on, i));
      try {
        return await handoffRun(fresh?.endpoint ?? endpoint, contenders, HANDOFF_MS);
      } finally {
        await closeAll(contenders);
        await fresh?.stop();
      }
    };
    // Rounds interleaved, best round kept (by handoffs/s), as for the uncontended runs.
    const variants: Array<(hosts: string[], i: number) => Contender | Promise<Contender>> = [
      (on) => leaseTxnContender(on, key("h-lease-txn")),
      (on) => etcd3LockContender(on, key("h-etcd3-lock")),
      (on) => oursContender(on, key("h-ours")),
    ];
    const best: Array<EtcdHandoffs | undefined> = variants.map(() => undefined);
    for (let round = 0; round < HANDOFF_ROUNDS; round++) {
      for (const [i, make] of variants.entries()) {
        const result = await eight(make);
        if (best[i] === undefined || result.perSecond > best[i]!.perSecond) best[i] = result;
      }
    }
    const [hFloor, hEtcd3, hOurs] = best as [EtcdHandoffs, EtcdHandoffs, EtcdHandoffs];
    const row = (name: string, r: EtcdHandoffs): Array<string | number> => [
      name,
      r.perSecond,
      ...gapCells(r.gaps),
      r.writes,
      r.events,
      r.calls,
    ];
    tables.push({
      suite: "etcd",
      title:
        "etcd: handoffs between 8 clients on one key (each release passes the lock to another client)",
      columns: [
        "library",
        "handoffs/s",
        ...GAP_COLUMNS,
        "writes/handoff",
        "watch events/handoff",
        "requests/handoff",
      ],
      rows: [
        row(`raw lease + txn, ${POLL_MS} ms polling`, hFloor),
        row(`etcd3 client.lock(), ${POLL_MS} ms retry polling`, hEtcd3),
        row("@locks/etcd (revision queue, watch on predecessor)", hOurs),
      ],
      notes: [
        "gap: from the holder's release() call to the next holder's grant, in one process (8 clients, one etcd3 client each); p10, median, p90, p99 of the best round's gaps (nearest rank)",
        "writes: raft proposals committed (puts, deletes, write transactions even when their condition fails, lease grants and revokes)",
        `goal: one watch event and no extra write per handoff, gap under 1 ms: ${hOurs.events.toFixed(2)} events, ${hOurs.writes.toFixed(2)} writes (the waiter's put and the holder's delete), ${hOurs.gapMs.toFixed(2)} ms`,
        "@locks/etcd's gap is the holder's delete (a write) + the watch event + one read (the waiter re-checks its own key after every wait); a poller's next transaction is often already queued behind the delete, at 3x the writes",
        `best of ${HANDOFF_ROUNDS} interleaved rounds of ${HANDOFF_MS} ms, each on a fresh etcd; uncontended: best of ${ROUNDS} interleaved rounds of ${UNCONTENDED_MS} ms`,
      ],
    });
  } finally {
    await server?.stop();
  }
  return tables;
};

export default suite;
