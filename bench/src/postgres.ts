import { availableParallelism, loadavg } from "node:os";
import { type PostgresBackendOptions, postgresBackend } from "@locks/postgres";
import { type PostgresServer, startPostgres } from "@locks/testkit";
import advisoryLock from "advisory-lock";
import pg from "pg";
import {
  type Contender,
  cpuSpent,
  cycle,
  GAP_COLUMNS,
  gapCells,
  type HandoffResult,
  handoffs,
  locksContender,
  median,
  processCpuUs,
  sleep,
  sum,
} from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * @locks/postgres against the raw floor and the npm `advisory-lock` package,
 * side by side in one run on one local PostgreSQL (fsync off, as the testkit
 * starts it):
 *
 * 1. uncontended acquire + release per second, one client, one key: the floor
 *    is pg_try_advisory_lock + pg_advisory_unlock on one connection;
 * 2. handoffs between 8 clients on one key, each release passing the lock to
 *    another client: the floor is the server's own queue (blocking
 *    pg_advisory_lock on 8 persistent connections). @locks/postgres is
 *    measured with both of its waiting strategies: in the server's queue
 *    (the default) and try + LISTEN/NOTIFY + bounded polling (maxConnections 1).
 */

const ROUNDS = 24;
const UNCONTENDED_MS = 6_000;
const HANDOFF_MS = 4_000;
const HANDOFF_ROUNDS = 8;
const CLIENTS = 8;

/** A bigint advisory id per bench key (the same for all contenders of it). */
function idOf(name: string): string {
  let h = 1469598103934665603n;
  for (const c of Buffer.from(name)) h = BigInt.asIntN(64, (h ^ BigInt(c)) * 1099511628211n);
  return h.toString();
}

async function connect(url: string, applicationName?: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    ...(applicationName !== undefined ? { application_name: applicationName } : {}),
  });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

// ---------------------------------------------------------------- contenders

/** The uncontended floor: try-lock and unlock on one persistent connection (prepared statements). */
async function rawTryContender(
  url: string,
  key: string,
  applicationName?: string,
): Promise<Contender> {
  const client = await connect(url, applicationName);
  const id = idOf(key);
  return {
    acquire: async () => {
      for (;;) {
        const { rows } = await client.query({
          name: "try",
          text: "SELECT pg_try_advisory_lock($1::int8) AS ok",
          values: [id],
        });
        if (rows[0].ok === true) break;
      }
      return () =>
        client.query({ name: "unlock", text: "SELECT pg_advisory_unlock($1::int8)", values: [id] });
    },
    close: () => client.end(),
  };
}

/** The handoff floor: the server's queue, pg_advisory_lock on a persistent connection. */
async function rawBlockingContender(
  url: string,
  key: string,
  applicationName?: string,
): Promise<Contender> {
  const client = await connect(url, applicationName);
  const id = idOf(key);
  return {
    acquire: async () => {
      await client.query({ name: "lock", text: "SELECT pg_advisory_lock($1::int8)", values: [id] });
      return () =>
        client.query({ name: "unlock", text: "SELECT pg_advisory_unlock($1::int8)", values: [id] });
    },
    close: () => client.end(),
  };
}

function oursContender(options: PostgresBackendOptions, key: string): Contender {
  return locksContender(postgresBackend(options), key);
}

/** advisory-lock 2: a new connection per lock; `lock()` blocks in the server's queue, `tryLock()` does not. */
function advisoryContender(url: string, key: string, blocking: boolean): Contender {
  // A CommonJS module: its `default` export is the factory.
  const mutex = advisoryLock.default(url)(key);
  return {
    acquire: async () => {
      if (blocking) return mutex.lock();
      for (;;) {
        const unlock = await mutex.tryLock();
        if (unlock !== undefined) return unlock;
      }
    },
    close: async () => {},
  };
}

// ---------------------------------------------------------------- measurements

interface UncontendedResult {
  /** Cycles per second of the best round: the cost with the least interference. */
  readonly best: number;
  /** Floor's best round / this one's. */
  readonly vsFloor: number;
  /** Median over the rounds of floor / this, each round's contenders measured back to back. */
  readonly medianRatio: number;
  /** CPU time of this process per cycle, µs (all rounds): independent of load from elsewhere. */
  readonly clientCpuUs: number;
  /** CPU time of the server sessions per cycle, µs (all rounds), when they can be read from /proc. */
  readonly serverCpuUs: number | undefined;
}

/** One contender of the uncontended table, and the server processes that work for it (for CPU time). */
interface Measured {
  readonly contender: Contender;
  readonly serverPids: () => Promise<number[]>;
}

/**
 * Uncontended cycles per second, in many short interleaved rounds (load from
 * elsewhere on the machine hits all alike), with the CPU time per cycle of
 * this process and of the server sessions.
 */
async function uncontended(
  makers: ReadonlyArray<readonly [string, () => Promise<Measured>]>,
): Promise<Map<string, UncontendedResult>> {
  const measured: Array<readonly [string, Measured]> = [];
  for (const [name, make] of makers) measured.push([name, await make()]);
  const rounds = new Map<
    string,
    Array<{ perSecond: number; cycles: number; client: number; server: number | undefined }>
  >();
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, { contender, serverPids }] of measured) {
        const once = cycle(contender);
        for (let i = 0; i < 10; i++) await once();
        const pids = await serverPids();
        const serverBefore = pids.map(processCpuUs);
        const cpuBefore = process.cpuUsage();
        const start = performance.now();
        let cycles = 0;
        while (performance.now() - start < UNCONTENDED_MS / ROUNDS) {
          for (let i = 0; i < 10; i++) await once();
          cycles += 10;
        }
        const elapsed = performance.now() - start;
        const cpu = process.cpuUsage(cpuBefore);
        const serverAfter = pids.map(processCpuUs);
        const server = cpuSpent(serverBefore, serverAfter);
        rounds.set(name, [
          ...(rounds.get(name) ?? []),
          {
            perSecond: (cycles * 1000) / elapsed,
            cycles,
            client: cpu.user + cpu.system,
            server,
          },
        ]);
      }
    }
  } finally {
    await Promise.allSettled(measured.map(([, m]) => m.contender.close()));
  }
  const floor = rounds.get(measured[0]![0])!;
  const result = new Map<string, UncontendedResult>();
  const floorBest = Math.max(...floor.map((r) => r.perSecond));
  for (const [name, values] of rounds) {
    const best = Math.max(...values.map((r) => r.perSecond));
    const servers = values.map((r) => r.server).filter((v): v is number => v !== undefined);
    const cycles = sum(values.map((r) => r.cycles));
    result.set(name, {
      best,
      vsFloor: floorBest / best,
      medianRatio: median(values.map((v, i) => floor[i]!.perSecond / v.perSecond)),
      clientCpuUs: sum(values.map((r) => r.client)) / cycles,
      serverCpuUs: servers.length === values.length ? sum(servers) / cycles : undefined,
    });
  }
  return result;
}

/** The server pids of the sessions whose application_name is `name`. */
async function pidsOf(admin: pg.Client, name: string): Promise<number[]> {
  const { rows } = await admin.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
    [name],
  );
  return rows.map((r) => r.pid);
}

interface PgHandoffs extends HandoffResult {
  /** CPU time of this process, µs (in a round; per handoff in the table). */
  readonly clientCpuUs: number;
  /** CPU time of the group's server sessions, µs, when /proc can tell (in a round; per handoff in the table). */
  readonly serverCpuUs: number | undefined;
}

/**
 * Handoffs (each release passes the lock to a client already waiting), with
 * the CPU time of this process and of `serverPids` over the counted window.
 */
async function handoffRun(
  contenders: readonly Contender[],
  ms: number,
  serverPids: readonly number[] = [],
): Promise<PgHandoffs> {
  let serverBefore: Array<number | undefined> = [];
  let serverAfter: Array<number | undefined> = [];
  let cpuBefore = process.cpuUsage();
  let cpu = cpuBefore;
  const run = await handoffs(contenders, {
    ms,
    queueMs: 100,
    window: {
      start: () => {
        serverBefore = serverPids.map(processCpuUs);
        cpuBefore = process.cpuUsage();
      },
      stop: () => {
        cpu = process.cpuUsage(cpuBefore);
        serverAfter = serverPids.map(processCpuUs);
      },
    },
  });
  return {
    ...run,
    clientCpuUs: cpu.user + cpu.system,
    serverCpuUs: cpuSpent(serverBefore, serverAfter),
  };
}

/**
 * Handoffs of each group of 8 contenders, in interleaved rounds (the groups
 * stay connected between rounds). Reports each group's median round and its
 * median ratio to the first group (the floor) over the rounds.
 */
async function handoffTable(
  makers: ReadonlyArray<readonly [string, (i: number) => Promise<Contender> | Contender]>,
  serverPids: (name: string) => Promise<number[]>,
): Promise<Map<string, PgHandoffs & { vsFloor: number }>> {
  const groups: Array<readonly [string, Contender[]]> = [];
  const rounds = new Map<string, PgHandoffs[]>();
  try {
    for (const [name, make] of makers) {
      const contenders: Contender[] = [];
      groups.push([name, contenders]);
      for (let i = 0; i < CLIENTS; i++) contenders.push(await make(i));
    }
    for (let round = 0; round < HANDOFF_ROUNDS; round++) {
      for (const [name, contenders] of groups) {
        const pids = await serverPids(name);
        const result = await handoffRun(contenders, HANDOFF_MS / HANDOFF_ROUNDS, pids);
        rounds.set(name, [...(rounds.get(name) ?? []), result]);
      }
    }
  } finally {
    await Promise.allSettled(groups.flatMap(([, contenders]) => contenders.map((c) => c.close())));
  }
  const floor = rounds.get(groups[0]![0])!;
  const result = new Map<string, PgHandoffs & { vsFloor: number }>();
  for (const [name, values] of rounds) {
    const servers = values.map((r) => r.serverCpuUs).filter((v): v is number => v !== undefined);
    result.set(name, {
      perSecond: median(values.map((r) => r.perSecond)),
      gapMs: median(values.flatMap((r) => r.gaps)),
      gaps: values.flatMap((r) => r.gaps),
      vsFloor: median(values.map((r, i) => floor[i]!.perSecond / r.perSecond)),
      handoffs: sum(values.map((r) => r.handoffs)),
      clientCpuUs: sum(values.map((r) => r.clientCpuUs)) / sum(values.map((r) => r.handoffs)),
      serverCpuUs:
        servers.length === values.length
          ? sum(servers) / sum(values.map((r) => r.handoffs))
          : undefined,
    });
  }
  return result;
}

/** Waits (up to 5 s) until no other client is connected to the server. */
async function drained(url: string): Promise<void> {
  const client = await connect(url);
  try {
    const deadline = performance.now() + 5_000;
    while (performance.now() < deadline) {
      const { rows } = await client.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
      );
      if (rows[0].n === 0) return;
      await sleep(20);
    }
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------- the suite

const suite: BenchSuite = async () => {
  const fromEnv = process.env.DATABASE_URL;
  const server: PostgresServer | undefined =
    fromEnv === undefined ? await startPostgres() : undefined;
  const url = fromEnv ?? server!.connectionString;
  const tables: BenchTable[] = [];
  const run = Math.random().toString(36).slice(2);
  try {
    // 1. Uncontended.
    const admin = await connect(url);
    const measure = (name: string, contender: Contender): Measured => ({
      contender,
      serverPids: () => pidsOf(admin, name),
    });
    const u = await uncontended([
      [
        "floor",
        async () =>
          measure(
            `bench-floor-${run}`,
            await rawTryContender(url, `u-raw-${run}`, `bench-floor-${run}`),
          ),
      ],
      [
        "ours",
        async () =>
          measure(
            `bench-ours-${run}`,
            oursContender(
              { connectionString: url, clientConfig: { application_name: `bench-ours-${run}` } },
              `u-ours-${run}`,
            ),
          ),
      ],
      // A connection per lock: its server processes come and go, so no server CPU for it.
      [
        "advisory",
        async () => ({
          contender: advisoryContender(url, `u-advisory-${run}`, false),
          serverPids: async () => [-1],
        }),
      ],
    ]);
    await admin.end();
    const floor = u.get("floor")!;
    const ours = u.get("ours")!;
    const advisory = u.get("advisory")!;
    const slower = (x: UncontendedResult): string => `${x.medianRatio.toFixed(2)}x slower`;
    const cpu = (x: UncontendedResult): string =>
      x.serverCpuUs === undefined
        ? `${x.clientCpuUs.toFixed(1)} + —`
        : `${x.clientCpuUs.toFixed(1)} + ${x.serverCpuUs.toFixed(1)} = ${(x.clientCpuUs + x.serverCpuUs).toFixed(1)}`;
    tables.push({
      suite: "postgres",
      title: "PostgreSQL: uncontended acquire + release (one client, one key, local server)",
      columns: [
        "library",
        "cycles/s (best round)",
        "vs floor (median of rounds)",
        "CPU µs per cycle: client + server",
      ],
      rows: [
        [
          "raw pg_try_advisory_lock + pg_advisory_unlock, one connection (floor)",
          floor.best,
          "1.00x",
          cpu(floor),
        ],
        ["@locks/postgres (with a fencing token per grant)", ours.best, slower(ours), cpu(ours)],
        [
          "advisory-lock 2 tryLock/unlock (a connection per lock)",
          advisory.best,
          slower(advisory),
          cpu(advisory),
        ],
      ],
      notes: [
        `goal: @locks/postgres within 1.25x of the floor: ${ours.medianRatio.toFixed(2)}x (${ours.medianRatio <= 1.25 ? "met" : "not met"}); ratio of the best rounds: ${ours.vsFloor.toFixed(2)}x; CPU per cycle: ${((ours.clientCpuUs + (ours.serverCpuUs ?? 0)) / (floor.clientCpuUs + (floor.serverCpuUs ?? 0))).toFixed(2)}x`,
        `advisory-lock reaches 1/${advisory.medianRatio.toFixed(0)} of the floor`,
        "CPU per cycle (all rounds; /proc for the server sessions) hardly depends on load from elsewhere on the machine: it is the cost each library adds",
        `${ROUNDS} interleaved rounds of ${UNCONTENDED_MS / ROUNDS} ms each, the floor first in each (a round's ratio compares runs back to back); load average during the run: ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`,
        "both the floor and @locks/postgres take 2 round trips per cycle; ours also draws a token from a sequence and checks for pollers in the same statements, and runs the core's lease",
      ],
    });

    // 2. Handoffs between 8 clients.
    const hAdmin = await connect(url);
    const app = (name: string): string => `bench-h-${name}-${run}`;
    const h = await handoffTable(
      [
        ["floor", () => rawBlockingContender(url, `h-raw-${run}`, app("floor"))],
        [
          "queue",
          () =>
            oursContender(
              { connectionString: url, clientConfig: { application_name: app("queue") } },
              `h-queue-${run}`,
            ),
        ],
        [
          "notify",
          () =>
            oursContender(
              {
                connectionString: url,
                maxConnections: 1,
                clientConfig: { application_name: app("notify") },
              },
              `h-notify-${run}`,
            ),
        ],
        ["advisory", () => advisoryContender(url, `h-advisory-${run}`, true)],
      ],
      // advisory-lock's sessions come and go with each lock: no server CPU for it.
      (name) => (name === "advisory" ? Promise.resolve([]) : pidsOf(hAdmin, app(name))),
    );
    await hAdmin.end();
    const hFloor = h.get("floor")!;
    const row = (name: string, r: PgHandoffs & { vsFloor: number }): Array<string | number> => [
      name,
      r.perSecond,
      ...gapCells(r.gaps),
      `${r.vsFloor.toFixed(2)}x slower`,
      r.serverCpuUs === undefined
        ? `${r.clientCpuUs.toFixed(0)} + —`
        : `${r.clientCpuUs.toFixed(0)} + ${r.serverCpuUs.toFixed(0)} = ${(r.clientCpuUs + r.serverCpuUs).toFixed(0)}`,
    ];
    const queue = h.get("queue")!;
    const notify = h.get("notify")!;
    tables.push({
      suite: "postgres",
      title:
        "PostgreSQL: handoffs between 8 clients on one key (each release passes the lock to another client)",
      columns: [
        "library",
        "handoffs/s (median round)",
        ...GAP_COLUMNS,
        "vs floor (median of rounds)",
        "CPU µs per handoff: client + server",
      ],
      rows: [
        row("raw pg_advisory_lock, 8 persistent connections (floor)", hFloor),
        row("@locks/postgres, waits in the server's queue (default)", queue),
        row("@locks/postgres, try + LISTEN/NOTIFY (maxConnections: 1)", notify),
        row("advisory-lock 2 lock/unlock (a connection per lock)", h.get("advisory")!),
      ],
      notes: [
        "gap: from the holder's release() call to the next holder's grant; 8 clients in one process, each with its own connections; p10, median, p90, p99 over the gaps of all rounds (nearest rank)",
        `goal: @locks/postgres within 3x of the floor: ${queue.vsFloor.toFixed(2)}x (${queue.vsFloor <= 3 ? "met" : "not met"})`,
        `the two waiting strategies: the server's queue hands over ${(notify.vsFloor / queue.vsFloor).toFixed(1)}x faster than try + NOTIFY, so it is the default`,
        `${HANDOFF_ROUNDS} interleaved rounds of ${HANDOFF_MS / HANDOFF_ROUNDS} ms per library; load average during the run: ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`,
      ],
    });
    return tables;
  } finally {
    if (server !== undefined) {
      // advisory-lock ends its connections without waiting: let them go before the server stops,
      // or they would receive its shutdown message with no error listener attached.
      await drained(server.connectionString);
      await server.stop();
    }
  }
};

export default suite;
