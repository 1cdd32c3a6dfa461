import { createHash } from "node:crypto";
import { availableParallelism, loadavg } from "node:os";
import { type MysqlBackendOptions, mysqlBackend } from "@locks/mysql";
import { type MariadbServer, startMariadb } from "@locks/testkit";
import mysql from "mysql2/promise";
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
  sum,
} from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * @locks/mysql against the raw floors, side by side in one run on one local
 * MariaDB (started by the testkit, innodb_flush_log_at_trx_commit=2):
 *
 * 1. uncontended acquire + release, one client, one key. Two floors on one
 *    dedicated mysql2 connection (text protocol, as the backend uses):
 *    the bare named lock (SELECT GET_LOCK(?,0) + SELECT RELEASE_LOCK(?)),
 *    and exactly what one cycle of the backend sends: the fencing upsert
 *    with GET_LOCK in its WHERE, then DO RELEASE_LOCK(?);
 * 2. handoffs between 8 clients on one key: the floor is the server's own
 *    wait (blocking GET_LOCK(?,30) on 8 persistent connections);
 *    @locks/mysql waits in the server (default with a uri: a connection per
 *    wait) or polls (maxConnections: 1).
 *
 * No npm peer: no MySQL/MariaDB named-lock package with real use was found
 * (see bench/README.md).
 */

const ROUNDS = 24;
const UNCONTENDED_MS = 6_000;
const HANDOFF_MS = 8_000;
const HANDOFF_ROUNDS = 8;
const CLIENTS = 8;
/** The floor's own fencing table (the backend's is `locks_fencing`): same shape. */
const FLOOR_TABLE = "bench_fencing";

/** A 64-character name per bench key, as the backend names its locks (SHA-256 hex). */
function nameOf(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

async function connect(url: string): Promise<mysql.Connection> {
  const conn = await mysql.createConnection({
    uri: url,
    supportBigNumbers: true,
    bigNumberStrings: true,
  });
  conn.on("error", () => undefined);
  return conn;
}

// ---------------------------------------------------------------- contenders

/** The bare floor: SELECT GET_LOCK(?,0) + SELECT RELEASE_LOCK(?) on one connection. */
async function rawTryContender(url: string, key: string): Promise<Contender> {
  const conn = await connect(url);
  const name = nameOf(key);
  return {
    acquire: async () => {
      for (;;) {
        const [rows] = await conn.query<mysql.RowDataPacket[]>("SELECT GET_LOCK(?, 0) AS got", [
          name,
        ]);
        if (Number(rows[0]?.got) === 1) break;
      }
      return () => conn.query("SELECT RELEASE_LOCK(?)", [name]);
    },
    close: () => conn.end(),
  };
}

/** The fencing floor: the backend's statements, one upsert with GET_LOCK in its WHERE + DO RELEASE_LOCK. */
async function rawFencedContender(url: string, key: string): Promise<Contender> {
  const conn = await connect(url);
  const name = nameOf(key);
  const take =
    `INSERT INTO ${FLOOR_TABLE} (k, token) SELECT UNHEX(?), LAST_INSERT_ID(1) FROM DUAL ` +
    "WHERE GET_LOCK(?, 0) = 1 ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)";
  return {
    acquire: async () => {
      for (;;) {
        const [ok] = await conn.query<mysql.ResultSetHeader>(take, [name, name]);
        if (ok.affectedRows > 0) break;
      }
      return () => conn.query("DO RELEASE_LOCK(?)", [name]);
    },
    close: () => conn.end(),
  };
}

/** The handoff floor: the server's wait, GET_LOCK(?,30) on a persistent connection. */
async function rawBlockingContender(url: string, key: string): Promise<Contender> {
  const conn = await connect(url);
  const name = nameOf(key);
  return {
    acquire: async () => {
      for (;;) {
        const [rows] = await conn.query<mysql.RowDataPacket[]>("SELECT GET_LOCK(?, 30) AS got", [
          name,
        ]);
        if (Number(rows[0]?.got) === 1) break;
      }
      return () => conn.query("DO RELEASE_LOCK(?)", [name]);
    },
    close: () => conn.end(),
  };
}

function oursContender(options: MysqlBackendOptions, key: string): Contender {
  return locksContender(mysqlBackend(options), key);
}

// ---------------------------------------------------------------- CPU time

function serverCpuUs(pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : processCpuUs(pid);
}

// ---------------------------------------------------------------- measurements

interface UncontendedResult {
  /** Cycles per second of the best round. */
  readonly best: number;
  /** Median over the rounds of baseline / this cycles per second (each round's contenders back to back), per baseline. */
  readonly timeRatio: ReadonlyMap<string, number>;
  /** CPU time of this process per cycle, µs (all rounds). */
  readonly clientCpuUs: number;
  /** CPU time of the whole mariadbd process per cycle, µs (all rounds), when /proc can tell. */
  readonly serverCpuUs: number | undefined;
}

/**
 * Uncontended cycles per second in many short interleaved rounds (load from
 * elsewhere hits all alike), with the CPU time per cycle of this process and
 * of the server process (only one contender runs at a time, so the server's
 * CPU in a round is that contender's, background threads included).
 */
async function uncontended(
  makers: ReadonlyArray<readonly [string, () => Promise<Contender> | Contender]>,
  baselines: readonly string[],
  serverPid: number | undefined,
): Promise<Map<string, UncontendedResult>> {
  const contenders: Array<readonly [string, Contender]> = [];
  const rounds = new Map<
    string,
    Array<{ perSecond: number; cycles: number; client: number; server: number | undefined }>
  >();
  try {
    for (const [name, make] of makers) contenders.push([name, await make()]);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, contender] of contenders) {
        const once = cycle(contender);
        for (let i = 0; i < 10; i++) await once();
        const serverBefore = serverCpuUs(serverPid);
        const cpuBefore = process.cpuUsage();
        const start = performance.now();
        let cycles = 0;
        while (performance.now() - start < UNCONTENDED_MS / ROUNDS) {
          for (let i = 0; i < 10; i++) await once();
          cycles += 10;
        }
        const elapsed = performance.now() - start;
        const cpu = process.cpuUsage(cpuBefore);
        const server = cpuSpent([serverBefore], [serverCpuUs(serverPid)]);
        rounds.set(name, [
          ...(rounds.get(name) ?? []),
          { perSecond: (cycles * 1000) / elapsed, cycles, client: cpu.user + cpu.system, server },
        ]);
      }
    }
  } finally {
    await Promise.allSettled(contenders.map(([, c]) => c.close()));
  }
  const result = new Map<string, UncontendedResult>();
  for (const [name, values] of rounds) {
    const servers = values.map((r) => r.server).filter((v): v is number => v !== undefined);
    const cycles = sum(values.map((r) => r.cycles));
    const timeRatio = new Map<string, number>();
    for (const base of baselines) {
      const floor = rounds.get(base)!;
      timeRatio.set(base, median(values.map((v, i) => floor[i]!.perSecond / v.perSecond)));
    }
    result.set(name, {
      best: Math.max(...values.map((r) => r.perSecond)),
      timeRatio,
      clientCpuUs: sum(values.map((r) => r.client)) / cycles,
      serverCpuUs: servers.length === values.length ? sum(servers) / cycles : undefined,
    });
  }
  return result;
}

interface MyHandoffs extends HandoffResult {
  /** CPU time of this process per handoff, µs. */
  readonly clientCpuUs: number;
  /** CPU time of the mariadbd process per handoff, µs, when /proc can tell. */
  readonly serverCpuUs: number | undefined;
  /** Median over the rounds of the floor's handoffs/s / this one's. */
  readonly vsFloor: number;
}

/**
 * Handoffs of each group of 8 contenders, in interleaved rounds (the groups
 * stay connected between rounds), with the CPU time of this process and of
 * the server over each counted window.
 */
async function handoffTable(
  makers: ReadonlyArray<readonly [string, (i: number) => Promise<Contender> | Contender]>,
  serverPid: number | undefined,
): Promise<Map<string, MyHandoffs>> {
  const groups: Array<readonly [string, Contender[]]> = [];
  const rounds = new Map<
    string,
    Array<HandoffResult & { client: number; server: number | undefined }>
  >();
  try {
    for (const [name, make] of makers) {
      const contenders: Contender[] = [];
      groups.push([name, contenders]);
      for (let i = 0; i < CLIENTS; i++) contenders.push(await make(i));
    }
    for (let round = 0; round < HANDOFF_ROUNDS; round++) {
      for (const [name, contenders] of groups) {
        let serverBefore: number | undefined;
        let server: number | undefined;
        let cpuBefore = process.cpuUsage();
        let client = 0;
        const run = await handoffs(contenders, {
          ms: HANDOFF_MS / HANDOFF_ROUNDS,
          queueMs: 100,
          window: {
            start: () => {
              serverBefore = serverCpuUs(serverPid);
              cpuBefore = process.cpuUsage();
            },
            stop: () => {
              const cpu = process.cpuUsage(cpuBefore);
              client = cpu.user + cpu.system;
              server = cpuSpent([serverBefore], [serverCpuUs(serverPid)]);
            },
          },
        });
        rounds.set(name, [...(rounds.get(name) ?? []), { ...run, client, server }]);
      }
    }
  } finally {
    await Promise.allSettled(groups.flatMap(([, contenders]) => contenders.map((c) => c.close())));
  }
  const floor = rounds.get(groups[0]![0])!;
  const result = new Map<string, MyHandoffs>();
  for (const [name, values] of rounds) {
    const count = sum(values.map((r) => r.handoffs));
    const servers = values.map((r) => r.server).filter((v): v is number => v !== undefined);
    result.set(name, {
      perSecond: median(values.map((r) => r.perSecond)),
      gapMs: median(values.flatMap((r) => r.gaps)),
      gaps: values.flatMap((r) => r.gaps),
      handoffs: count,
      vsFloor: median(values.map((r, i) => floor[i]!.perSecond / r.perSecond)),
      clientCpuUs: sum(values.map((r) => r.client)) / count,
      serverCpuUs: servers.length === values.length ? sum(servers) / count : undefined,
    });
  }
  return result;
}

const cpuCell = (client: number, server: number | undefined, digits: number): string =>
  server === undefined
    ? `${client.toFixed(digits)} + —`
    : `${client.toFixed(digits)} + ${server.toFixed(digits)} = ${(client + server).toFixed(digits)}`;

const totalCpu = (x: { clientCpuUs: number; serverCpuUs: number | undefined }): number =>
  x.clientCpuUs + (x.serverCpuUs ?? 0);

// ---------------------------------------------------------------- the suite

const suite: BenchSuite = async () => {
  const fromEnv = process.env.MYSQL_URL;
  const server: MariadbServer | undefined =
    fromEnv === undefined ? await startMariadb() : undefined;
  const url = fromEnv ?? server!.url;
  // The whole server process: only when it is ours (and local).
  const serverPid = server?.pid;
  const tables: BenchTable[] = [];
  const run = Math.random().toString(36).slice(2);
  try {
    const admin = await connect(url);
    try {
      await admin.query(
        `CREATE TABLE IF NOT EXISTS ${FLOOR_TABLE} ` +
          "(k BINARY(32) NOT NULL PRIMARY KEY, token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
      );
    } finally {
      await admin.end();
    }

    // 1. Uncontended.
    const u = await uncontended(
      [
        ["bare", () => rawTryContender(url, `u-bare-${run}`)],
        ["fenced", () => rawFencedContender(url, `u-fenced-${run}`)],
        ["ours", () => oursContender({ uri: url }, `u-ours-${run}`)],
      ],
      ["bare", "fenced"],
      serverPid,
    );
    const bare = u.get("bare")!;
    const fenced = u.get("fenced")!;
    const ours = u.get("ours")!;
    const ratios = (x: UncontendedResult): string =>
      `${x.timeRatio.get("bare")!.toFixed(2)}x / ${x.timeRatio.get("fenced")!.toFixed(2)}x`;
    const cpuRatios = (x: UncontendedResult): string =>
      `${(totalCpu(x) / totalCpu(bare)).toFixed(2)}x / ${(totalCpu(x) / totalCpu(fenced)).toFixed(2)}x`;
    const cpuGoal = totalCpu(ours) / totalCpu(fenced);
    const clientGoal = ours.clientCpuUs / fenced.clientCpuUs;
    tables.push({
      suite: "mysql",
      title: "MySQL (MariaDB): uncontended acquire + release (one client, one key, local server)",
      columns: [
        "library",
        "cycles/s (best round)",
        "time vs floors: bare / fenced (median of rounds)",
        "CPU µs per cycle: client + server",
        "CPU vs floors: bare / fenced",
      ],
      rows: [
        [
          "raw SELECT GET_LOCK(?,0) + SELECT RELEASE_LOCK(?), one connection (bare floor)",
          bare.best,
          ratios(bare),
          cpuCell(bare.clientCpuUs, bare.serverCpuUs, 1),
          cpuRatios(bare),
        ],
        [
          "raw fencing upsert with GET_LOCK in its WHERE + DO RELEASE_LOCK(?), one connection (fenced floor)",
          fenced.best,
          ratios(fenced),
          cpuCell(fenced.clientCpuUs, fenced.serverCpuUs, 1),
          cpuRatios(fenced),
        ],
        [
          "@locks/mysql (with a fencing token per grant)",
          ours.best,
          ratios(ours),
          cpuCell(ours.clientCpuUs, ours.serverCpuUs, 1),
          cpuRatios(ours),
        ],
      ],
      notes: [
        `goal: @locks/mysql within 1.25x of the fenced floor's CPU per cycle: ${cpuGoal.toFixed(2)}x (${cpuGoal <= 1.25 ? "met" : "not met"}); client CPU alone: ${clientGoal.toFixed(2)}x; wall-clock: ${ours.timeRatio.get("fenced")!.toFixed(2)}x`,
        "the fenced floor sends exactly what one cycle of @locks/mysql sends (2 round trips, text protocol); the bare floor is the named lock alone, without the token",
        "server CPU: the whole mariadbd process over the round (one contender runs at a time), background threads included",
        `${ROUNDS} interleaved rounds of ${UNCONTENDED_MS / ROUNDS} ms each; load average during the run: ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`,
        "no npm peer: no MySQL/MariaDB named-lock package with real use was found (bench/README.md)",
      ],
    });

    // 2. Handoffs between 8 clients.
    const h = await handoffTable(
      [
        ["floor", () => rawBlockingContender(url, `h-floor-${run}`)],
        ["server", () => oursContender({ uri: url }, `h-server-${run}`)],
        ["poll", () => oursContender({ uri: url, maxConnections: 1 }, `h-poll-${run}`)],
      ],
      serverPid,
    );
    const hFloor = h.get("floor")!;
    const waits = h.get("server")!;
    const polls = h.get("poll")!;
    const row = (name: string, r: MyHandoffs): Array<string | number> => [
      name,
      r.perSecond,
      ...gapCells(r.gaps),
      `${r.vsFloor.toFixed(2)}x slower`,
      cpuCell(r.clientCpuUs, r.serverCpuUs, 0),
      `${(totalCpu(r) / totalCpu(hFloor)).toFixed(2)}x`,
    ];
    tables.push({
      suite: "mysql",
      title:
        "MySQL (MariaDB): handoffs between 8 clients on one key (each release passes the lock to another client)",
      columns: [
        "library",
        "handoffs/s (median round)",
        ...GAP_COLUMNS,
        "vs floor (median of rounds)",
        "CPU µs per handoff: client + server",
        "CPU vs floor",
      ],
      rows: [
        row("raw GET_LOCK(?,30), 8 persistent connections (floor)", hFloor),
        row("@locks/mysql, waits in the server (default with a uri)", waits),
        row("@locks/mysql, polls (maxConnections: 1)", polls),
      ],
      notes: [
        "gap: from the holder's release() call to the next holder's grant; 8 clients in one process, each with its own connections; p10, median, p90, p99 over the gaps of all rounds (nearest rank)",
        "waits in the server: each wait opens a connection of its own, blocks in GET_LOCK(?,30) there, and holds the lock on it until the release closes it",
        `the two waiting strategies: polling hands over ${(waits.vsFloor / polls.vsFloor).toFixed(1)}x as fast as server waits, at ${(totalCpu(polls) / totalCpu(waits)).toFixed(2)}x their CPU per handoff: a holder here releases at once, so pollers still at their first back-off steps (2, 4, 8 ms) catch the lock, while each server wait pays a connection of its own (connect, authenticate, close)`,
        `${HANDOFF_ROUNDS} interleaved rounds of ${HANDOFF_MS / HANDOFF_ROUNDS} ms per library; load average during the run: ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`,
      ],
    });
    return tables;
  } finally {
    await server?.stop();
  }
};

export default suite;
