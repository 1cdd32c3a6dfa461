import { availableParallelism, loadavg } from "node:os";
import { createLocks, type Locks } from "@locks/core";
import { type PostgresBackendOptions, postgresBackend } from "@locks/postgres";
import { type PostgresServer, startPostgres } from "@locks/testkit";
import advisoryLock from "advisory-lock";
import pg from "pg";
import type { BenchSuite, BenchTable } from "./table.js";
import { opsPerSecond } from "./table.js";

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

/** Takes the lock (waiting as the library does) and resolves with its release. */
type Acquire = () => Promise<() => Promise<unknown>>;

interface Contender {
  readonly acquire: Acquire;
  readonly close: () => Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A bigint advisory id per bench key (the same for all contenders of it). */
function idOf(name: string): string {
  let h = 1469598103934665603n;
  for (const c of Buffer.from(name)) h = BigInt.asIntN(64, (h ^ BigInt(c)) * 1099511628211n);
  return h.toString();
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

// ---------------------------------------------------------------- contenders

/** The uncontended floor: try-lock and unlock on one persistent connection (prepared statements). */
async function rawTryContender(url: string, key: string): Promise<Contender> {
  const client = await connect(url);
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
async function rawBlockingContender(url: string, key: string): Promise<Contender> {
  const client = await connect(url);
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

function locksContender(options: PostgresBackendOptions, key: string): Contender {
  const locks: Locks = createLocks(postgresBackend(options), { namespace: "bench" });
  return {
    acquire: async () => {
      const lease = await locks.acquire(key);
      return () => lease.release();
    },
    close: () => locks.close(),
  };
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

/**
 * Uncontended cycles per second, in many short interleaved rounds (load from
 * elsewhere on the machine hits all alike). Reports each contender's median
 * round, and its median ratio to the floor over the rounds (each round's
 * contenders run back to back, so the ratio of a round is fair even when the
 * load changes from one round to the next).
 */
async function uncontended(
  makers: ReadonlyArray<readonly [string, () => Promise<Contender> | Contender]>,
): Promise<Map<string, { perSecond: number; vsFloor: number }>> {
  const contenders: Array<readonly [string, Contender]> = [];
  for (const [name, make] of makers) contenders.push([name, await make()]);
  const rounds = new Map<string, number[]>();
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, contender] of contenders) {
        const ops = await opsPerSecond(
          async () => {
            const release = await contender.acquire();
            await release();
          },
          UNCONTENDED_MS / ROUNDS,
          10,
        );
        rounds.set(name, [...(rounds.get(name) ?? []), ops]);
      }
    }
  } finally {
    await Promise.allSettled(contenders.map(([, c]) => c.close()));
  }
  const floor = rounds.get(contenders[0]![0])!;
  const result = new Map<string, { perSecond: number; vsFloor: number }>();
  for (const [name, values] of rounds) {
    result.set(name, {
      perSecond: median(values),
      vsFloor: median(values.map((v, i) => floor[i]! / v)),
    });
  }
  return result;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

interface HandoffResult {
  readonly perSecond: number;
  /** Median ms from the holder's release() call to the next holder's grant. */
  readonly gapMs: number;
}

/**
 * Every contender loops: acquire, release, then wait until another contender
 * took the lock before asking again. So each release hands the lock to a
 * client that was already waiting (never back to the releaser).
 */
async function handoffs(contenders: readonly Contender[], ms: number): Promise<HandoffResult> {
  let stop = false;
  let counting = false;
  let counted = 0;
  let lastHolder = -1;
  let releasedAt = 0;
  const gaps: number[] = [];
  let onGrant: Array<() => void> = [];
  const someoneElseHolds = (me: number): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (stop || lastHolder !== me) resolve();
        else onGrant.push(check);
      };
      check();
    });
  const loops = contenders.map(async (contender, me) => {
    while (!stop) {
      const release = await contender.acquire();
      if (counting && lastHolder !== -1 && lastHolder !== me) {
        gaps.push(performance.now() - releasedAt);
        counted++;
      }
      lastHolder = me;
      const waiting = onGrant;
      onGrant = [];
      for (const wake of waiting) wake();
      releasedAt = performance.now();
      await release();
      await someoneElseHolds(me);
    }
  });
  await sleep(100); // every contender queues up before counting
  counting = true;
  const start = performance.now();
  await sleep(ms);
  counting = false;
  const elapsed = performance.now() - start;
  stop = true;
  for (const wake of onGrant) wake();
  onGrant = [];
  await Promise.all(loops);
  gaps.sort((a, b) => a - b);
  return {
    perSecond: (counted * 1000) / elapsed,
    gapMs: gaps[Math.floor(gaps.length / 2)] ?? Number.NaN,
  };
}

/**
 * Handoffs of each group of 8 contenders, in interleaved rounds (the groups
 * stay connected between rounds). Reports each group's median round and its
 * median ratio to the first group (the floor) over the rounds.
 */
async function handoffTable(
  makers: ReadonlyArray<readonly [string, (i: number) => Promise<Contender> | Contender]>,
): Promise<Map<string, HandoffResult & { vsFloor: number }>> {
  const groups: Array<readonly [string, Contender[]]> = [];
  const rounds = new Map<string, HandoffResult[]>();
  try {
    for (const [name, make] of makers) {
      const contenders: Contender[] = [];
      groups.push([name, contenders]);
      for (let i = 0; i < CLIENTS; i++) contenders.push(await make(i));
    }
    for (let round = 0; round < HANDOFF_ROUNDS; round++) {
      for (const [name, contenders] of groups) {
        const result = await handoffs(contenders, HANDOFF_MS / HANDOFF_ROUNDS);
        rounds.set(name, [...(rounds.get(name) ?? []), result]);
      }
    }
  } finally {
    await Promise.allSettled(groups.flatMap(([, contenders]) => contenders.map((c) => c.close())));
  }
  const floor = rounds.get(groups[0]![0])!;
  const result = new Map<string, HandoffResult & { vsFloor: number }>();
  for (const [name, values] of rounds) {
    result.set(name, {
      perSecond: median(values.map((r) => r.perSecond)),
      gapMs: median(values.map((r) => r.gapMs)),
      vsFloor: median(values.map((r, i) => floor[i]!.perSecond / r.perSecond)),
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
    const u = await uncontended([
      ["floor", () => rawTryContender(url, `u-raw-${run}`)],
      ["ours", () => locksContender({ connectionString: url }, `u-ours-${run}`)],
      ["advisory", () => advisoryContender(url, `u-advisory-${run}`, false)],
    ]);
    const floor = u.get("floor")!;
    const ours = u.get("ours")!;
    const advisory = u.get("advisory")!;
    const slower = (x: { vsFloor: number }): string => `${x.vsFloor.toFixed(2)}x slower`;
    tables.push({
      suite: "postgres",
      title: "PostgreSQL: uncontended acquire + release (one client, one key, local server)",
      columns: ["library", "cycles/s (median round)", "vs floor (median of rounds)"],
      rows: [
        [
          "raw pg_try_advisory_lock + pg_advisory_unlock, one connection (floor)",
          floor.perSecond,
          "1.00x",
        ],
        ["@locks/postgres (with a fencing token per grant)", ours.perSecond, slower(ours)],
        [
          "advisory-lock 2 tryLock/unlock (a connection per lock)",
          advisory.perSecond,
          slower(advisory),
        ],
      ],
      notes: [
        `goal: @locks/postgres within 1.25x of the floor: ${ours.vsFloor.toFixed(2)}x (${ours.vsFloor <= 1.25 ? "met" : "not met"})`,
        `advisory-lock reaches 1/${advisory.vsFloor.toFixed(0)} of the floor`,
        `${ROUNDS} interleaved rounds of ${UNCONTENDED_MS / ROUNDS} ms each; load average during the run: ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`,
        "both the floor and @locks/postgres take 2 round trips per cycle; ours also draws a token from a sequence and checks for pollers in the same statements, and runs the core's lease",
      ],
    });

    // 2. Handoffs between 8 clients.
    const h = await handoffTable([
      ["floor", () => rawBlockingContender(url, `h-raw-${run}`)],
      ["queue", () => locksContender({ connectionString: url }, `h-queue-${run}`)],
      [
        "notify",
        () => locksContender({ connectionString: url, maxConnections: 1 }, `h-notify-${run}`),
      ],
      ["advisory", () => advisoryContender(url, `h-advisory-${run}`, true)],
    ]);
    const hFloor = h.get("floor")!;
    const row = (name: string, r: HandoffResult & { vsFloor: number }): Array<string | number> => [
      name,
      r.perSecond,
      r.gapMs,
      `${r.vsFloor.toFixed(2)}x slower`,
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
        "median gap (ms)",
        "vs floor (median of rounds)",
      ],
      rows: [
        row("raw pg_advisory_lock, 8 persistent connections (floor)", hFloor),
        row("@locks/postgres, waits in the server's queue (default)", queue),
        row("@locks/postgres, try + LISTEN/NOTIFY (maxConnections: 1)", notify),
        row("advisory-lock 2 lock/unlock (a connection per lock)", h.get("advisory")!),
      ],
      notes: [
        "gap: from the holder's release() call to the next holder's grant; 8 clients in one process, each with its own connections",
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
