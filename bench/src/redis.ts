import { type Backend, createLocks } from "@locks/core";
import { redisBackend } from "@locks/redis";
import { type RedisServer, startRedis, startRedisGroup } from "@locks/testkit";
import { Redis } from "ioredis";
import { Mutex } from "redis-semaphore";
import { CpuTally, cpuCell, cpuOpsPerSecond, cpuRatio } from "./cpu.js";
import {
  build,
  type Contender,
  clientContender,
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
 * @locks/redis against the raw floor (SET NX PX + an owner-checked EVALSHA
 * delete), redlock 5 and redis-semaphore, measured side by side in one run on
 * one local redis-server (and a group of 3 for Redlock):
 *
 * 1. uncontended acquire + release per second (one client, one key);
 * 2. handoffs with 8 clients on one key, each release passing the lock to
 *    another client: handoffs per second and the gap from the release call
 *    to the next holder's grant;
 * 3. Redis commands per handoff with 10, 100 and 1,000 waiters, from INFO
 *    commandstats (every command the server ran, those inside scripts
 *    included) and the scripts/commands the clients sent: pollers' cost grows
 *    with the waiters, a notified waiter's does not.
 */

const UNCONTENDED_MS = 1_500;
const ROUNDS = 5;
const HANDOFF_MS = 2_500;
const WAITERS_MS = 2_000;
/** The waiter counts of the commands-per-handoff sweep (x of the docs' line chart). */
const WAITER_COUNTS = [10, 100, 1_000];
/** Instances of the "several processes" rows: the waiters are split over them. */
const INSTANCES = 10;
const TTL_MS = 30_000;

/** The part of redlock 5 used here (its package's "exports" hide its types from NodeNext resolution). */
interface RedlockInstance {
  acquire(resources: string[], durationMs: number): Promise<{ release(): Promise<unknown> }>;
}
type RedlockClass = new (clients: Iterable<Redis>) => RedlockInstance;
const redlockModule = "redlock";
const { default: Redlock } = (await import(redlockModule)) as { default: RedlockClass };

const RELEASE_LUA = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

async function connect(url: string): Promise<Redis> {
  const client = new Redis(url, { lazyConnect: true });
  await client.connect();
  return client;
}

// ---------------------------------------------------------------- contenders

/** Raw floor: SET NX PX, then EVALSHA of the owner-checked delete; waiting polls every `pollMs`. */
async function rawContender(url: string, key: string, pollMs = 1): Promise<Contender> {
  const client = await connect(url);
  const sha = (await client.script("LOAD", RELEASE_LUA)) as string;
  let n = 0;
  const id = Math.random().toString(36).slice(2);
  return {
    acquire: async () => {
      const token = `${id}:${n++}`;
      while ((await client.set(key, token, "PX", TTL_MS, "NX")) !== "OK") await sleep(pollMs);
      return () => client.evalsha(sha, 1, key, token);
    },
    close: async () => {
      await client.quit();
    },
  };
}

function oursContender(backend: Backend, key: string): Contender {
  return locksContender(backend, key, { ttlMs: TTL_MS });
}

/** redlock 5 with its default retries (10 tries, 200 ms delay + up to 200 ms jitter); retried forever here. */
async function redlockContender(urls: readonly string[], key: string): Promise<Contender> {
  const clients = await Promise.all(urls.map(connect));
  const redlock = new Redlock(clients);
  return {
    acquire: async () => {
      for (;;) {
        try {
          const lock = await redlock.acquire([key], TTL_MS);
          return () => lock.release();
        } catch {
          // ExecutionError after its retries: start again, as a caller with a deadline would.
        }
      }
    },
    close: async () => {
      await Promise.all(clients.map((c) => c.quit()));
    },
  };
}

/** redis-semaphore's Mutex with its defaults (10 ms retry interval); no auto-refresh during the bench. */
async function semaphoreContender(url: string, key: string): Promise<Contender> {
  const client = await connect(url);
  return {
    acquire: async () => {
      const mutex = new Mutex(client, key, {
        lockTimeout: TTL_MS,
        acquireTimeout: 600_000,
        refreshInterval: 0,
      });
      await mutex.acquire();
      return () => mutex.release();
    },
    close: async () => {
      await client.quit();
    },
  };
}

/** Progress on stderr: the sweep runs for a minute or more. */
function progress(what: string): void {
  process.stderr.write(`redis: ${what} (${(performance.now() / 1000).toFixed(0)} s)\n`);
}

// ---------------------------------------------------------------- measurements

/** One contender's uncontended figures: its best round, and its CPU over all rounds. */
interface Uncontended {
  readonly best: number;
  readonly cpu: CpuTally;
}

/**
 * Uncontended cycles per second of each contender, measured in interleaved
 * rounds (so that load from elsewhere on the machine hits all alike); the
 * best round of each counts, and the CPU per cycle of this process and of
 * `pids` (the redis-servers it talks to) over all rounds.
 */
async function uncontended(
  makers: ReadonlyArray<readonly [string, () => Promise<Contender>, readonly number[]]>,
): Promise<Map<string, Uncontended>> {
  const contenders = await Promise.all(
    makers.map(async ([name, make, pids]) => [name, await make(), new CpuTally(pids)] as const),
  );
  const best = new Map<string, number>();
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, contender, tally] of contenders) {
        const ops = await cpuOpsPerSecond(cycle(contender), UNCONTENDED_MS / ROUNDS, tally);
        best.set(name, Math.max(best.get(name) ?? 0, ops));
      }
    }
    return new Map(contenders.map(([name, , cpu]) => [name, { best: best.get(name)!, cpu }]));
  } finally {
    await closeAll(contenders.map(([, c]) => c));
  }
}

/** How long every other contender must have been waiting before the holder releases. */
const SETTLE_MS = 2;

/** Handoffs with 2 ms holds (see SETTLE_MS), after 300 ms for every contender to queue up. */
function handoffRun(
  contenders: readonly Contender[],
  ms: number,
  live?: { grants: number },
): Promise<HandoffResult> {
  return handoffs(contenders, { ms, queueMs: 300, settleMs: SETTLE_MS, ...(live ? { live } : {}) });
}

/** Calls per command from INFO commandstats. */
async function commandStats(admin: Redis): Promise<Map<string, number>> {
  const info = (await admin.info("commandstats")) as string;
  const stats = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    stats.set(match[1] as string, Number(match[2]));
  }
  return stats;
}

interface CommandCount {
  readonly handoffs: number;
  /** Every command the server ran per handoff, including those inside scripts. */
  readonly perHandoff: number;
  /** Script calls and plain lock commands the clients sent, per handoff. */
  readonly sentPerHandoff: number;
}

/**
 * Commands sent by every ioredis client of this process but `admin`, counted
 * where they leave the client: the server's own statistics cannot tell a
 * client's command from one run inside a script.
 */
const sentCounter = { count: 0, ignore: undefined as Redis | undefined };
const originalSend = Redis.prototype.sendCommand;
Redis.prototype.sendCommand = function (this: Redis, ...args: Parameters<Redis["sendCommand"]>) {
  if (this !== sentCounter.ignore) sentCounter.count++;
  return originalSend.apply(this, args);
} as Redis["sendCommand"];

async function commandsPerHandoff(
  admin: Redis,
  contenders: readonly Contender[],
  ms: number,
): Promise<CommandCount> {
  sentCounter.ignore = admin;
  const live = { grants: 0 };
  const loops = handoffRun(contenders, ms, live);
  // Count over a window inside the run: skip the start-up, stop before the drain.
  await sleep(300);
  const before = await commandStats(admin);
  const sentBefore = sentCounter.count;
  const grantsBefore = live.grants;
  await sleep(ms - 300);
  const sent = sentCounter.count - sentBefore;
  const after = await commandStats(admin);
  const inWindow = live.grants - grantsBefore;
  await loops;
  let all = 0;
  for (const [name, calls] of after) {
    if (name === "info") continue;
    all += calls - (before.get(name) ?? 0);
  }
  return { handoffs: inWindow, perHandoff: all / inWindow, sentPerHandoff: sent / inWindow };
}

// ---------------------------------------------------------------- the suite

const suite: BenchSuite = async () => {
  const fromEnv = process.env.REDIS_URL;
  const servers: RedisServer[] = [];
  if (fromEnv === undefined) servers.push(await startRedis());
  const url = fromEnv ?? servers[0]!.url;
  const group = await startRedisGroup(3);
  servers.push(...group);
  const groupUrls = group.map((s) => s.url);
  const admin = await connect(url);
  const tables: BenchTable[] = [];
  try {
    // 1. Uncontended.
    const key = (name: string): string => `bench:${name}:${Math.random().toString(36).slice(2)}`;
    // The servers' CPU is read from /proc: only for servers started here.
    const pids = fromEnv === undefined ? [servers[0]!.pid] : [];
    const groupPids = group.map((s) => s.pid);
    const u = await uncontended([
      ["raw", () => rawContender(url, key("raw")), pids],
      ["ours", async () => oursContender(redisBackend({ url }), "uncontended"), pids],
      [
        "fair",
        async () => oursContender(redisBackend({ url, fair: true }), "uncontended-fair"),
        pids,
      ],
      ["redlock1", () => redlockContender([url], key("redlock")), pids],
      ["semaphore", () => semaphoreContender(url, key("semaphore")), pids],
      [
        "oursRedlock",
        async () => oursContender(redisBackend({ urls: groupUrls }), "uncontended-redlock"),
        groupPids,
      ],
      ["redlock3", () => redlockContender(groupUrls, key("redlock3")), groupPids],
    ]);
    const get = (name: string): Uncontended => u.get(name)!;
    const raw = get("raw");
    const ours = get("ours");
    const urow = (name: string, r: Uncontended): Array<string | number> => [
      name,
      r.best,
      r === raw
        ? "1.00x"
        : r.best <= raw.best
          ? `${(raw.best / r.best).toFixed(2)}x slower`
          : `${(r.best / raw.best).toFixed(2)}x faster`,
      cpuCell(r.cpu),
      cpuRatio(r.cpu, raw.cpu),
    ];
    const cpuVsFloor = ours.cpu.total / raw.cpu.total;
    tables.push({
      suite: "redis",
      title: "Redis: uncontended acquire + release (one client, one key, local redis-server)",
      columns: [
        "library",
        "cycles/s",
        "vs raw floor",
        "CPU µs per cycle: client + server",
        "CPU vs floor",
      ],
      rows: [
        urow("raw SET NX PX + EVALSHA delete (floor)", raw),
        urow("@locks/redis", ours),
        urow("@locks/redis fair", get("fair")),
        urow("redlock 5 (1 server)", get("redlock1")),
        urow("redis-semaphore Mutex", get("semaphore")),
        urow("@locks/redis Redlock (3 servers)", get("oursRedlock")),
        urow("redlock 5 (3 servers)", get("redlock3")),
      ],
      notes: [
        `goal: @locks/redis within 1.25x of the raw floor's CPU per cycle: ${cpuVsFloor.toFixed(2)}x (${cpuVsFloor <= 1.25 ? "met" : "not met"}); best rounds' wall clock: ${(raw.best / ours.best).toFixed(2)}x`,
        `cycles/s: best of ${ROUNDS} interleaved rounds of ${UNCONTENDED_MS / ROUNDS} ms; CPU per cycle: all rounds, this process (process.cpuUsage) + the redis-server(s) (/proc/<pid>/stat, 10 ms ticks); the Redlock rows against the 3-server group`,
        "@locks/redis includes the core's lease (watchdog timer, owner token, validation); the floor has none",
      ],
    });

    // 2. Handoffs between 8 clients.
    const eight = async (
      make: (i: number) => Promise<Contender> | Contender,
    ): Promise<HandoffResult> => {
      const contenders = await build(8, make);
      try {
        return await handoffRun(contenders, HANDOFF_MS);
      } finally {
        await closeAll(contenders);
      }
    };
    const hkey = key("handoff");
    const hRaw = await eight(() => rawContender(url, `${hkey}:raw`, 1));
    const hOurs = await eight(() => oursContender(redisBackend({ url }), "handoff"));
    const hFair = await eight(() =>
      oursContender(redisBackend({ url, fair: true }), "handoff-fair"),
    );
    const hRedlock = await eight(() => redlockContender([url], `${hkey}:redlock`));
    const hSemaphore = await eight(() => semaphoreContender(url, `${hkey}:semaphore`));
    const hOursRedlock = await eight(() =>
      oursContender(redisBackend({ urls: groupUrls }), "handoff-redlock"),
    );
    const row = (name: string, r: HandoffResult): Array<string | number> => [
      name,
      r.perSecond,
      ...gapCells(r.gaps),
      `${(hRedlock.gapMs / r.gapMs).toFixed(1)}x`,
    ];
    tables.push({
      suite: "redis",
      title:
        "Redis: handoffs between 8 clients on one key (each release passes the lock to another client)",
      columns: [
        "library",
        "handoffs/s (incl. 2 ms holds)",
        ...GAP_COLUMNS,
        "median gap: redlock's / this",
      ],
      rows: [
        row("raw SET NX PX, 1 ms polling", hRaw),
        row("@locks/redis (pub/sub, no polling)", hOurs),
        row("@locks/redis fair (FIFO queue)", hFair),
        row("redlock 5, default retries", hRedlock),
        row("redis-semaphore Mutex (10 ms polling)", hSemaphore),
        row("@locks/redis Redlock (3 servers)", hOursRedlock),
      ],
      notes: [
        "gap: from the holder's release() call to the next holder's grant, in one process (8 connections each); p10, median, p90, p99 of the run's gaps (nearest rank: with fewer than 100 gaps, as redlock's, the p99 is the largest)",
        "each holder keeps the lock until every other client has waited 2 ms, so the next holder is always a waiter",
        `goal: gap under 0.5 ms without polling, over 50x redlock: ${hOurs.gapMs.toFixed(3)} ms, ${(hRedlock.gapMs / hOurs.gapMs).toFixed(0)}x`,
      ],
    });

    // 3. Commands per handoff vs waiters.
    const sweep: Array<Array<string | number>> = [];
    const measure = async (
      name: string,
      waiters: number,
      make: (i: number) => Promise<Contender> | Contender,
      ms = WAITERS_MS,
    ): Promise<void> => {
      const contenders = await build(waiters, make);
      try {
        const c = await commandsPerHandoff(admin, contenders, ms);
        sweep.push([name, waiters, c.handoffs, c.sentPerHandoff, c.perHandoff]);
      } finally {
        await closeAll(contenders);
      }
    };
    /** Our waiters over `instances` backend instances (Locks clients), `fair` or not. */
    const oursAt = async (
      name: string,
      waiters: number,
      instances: number,
      fair: boolean,
    ): Promise<void> => {
      const clients = Array.from({ length: instances }, () =>
        createLocks(redisBackend({ url, fair }), { namespace: "bench", ttlMs: TTL_MS }),
      );
      const key = `waiters-${fair ? "fair" : "plain"}-${instances}-${waiters}`;
      try {
        await measure(name, waiters, (i) => clientContender(clients[i % instances]!, key));
      } finally {
        await Promise.all(clients.map((l) => l.close()));
      }
    };
    for (const waiters of WAITER_COUNTS) {
      progress(`commands per handoff, ${waiters} waiters`);
      const wkey = key(`waiters-${waiters}`);
      // One backend instance (one connection + one subscriber) for all waiters.
      await oursAt("@locks/redis, 1 backend instance", waiters, 1, false);
      // Ten backend instances (ten "processes"), the waiters split over them.
      await oursAt(`@locks/redis, ${INSTANCES} instances`, waiters, INSTANCES, false);
      await oursAt(`@locks/redis fair, ${INSTANCES} instances`, waiters, INSTANCES, true);
      await measure("raw SET NX PX, 1 ms polling", waiters, () =>
        rawContender(url, `${wkey}:raw`, 1),
      );
      await measure(
        "redlock 5, default retries",
        waiters,
        () => redlockContender([url], `${wkey}:redlock`),
        3_000,
      );
      await measure("redis-semaphore Mutex (10 ms polling)", waiters, () =>
        semaphoreContender(url, `${wkey}:semaphore`),
      );
    }
    // Each library's rows together, by waiters.
    const order = [...new Set(sweep.map((r) => r[0]))];
    sweep.sort(
      (a, b) => order.indexOf(a[0]!) - order.indexOf(b[0]!) || Number(a[1]) - Number(b[1]),
    );
    tables.push({
      suite: "redis",
      title: "Redis: commands per handoff vs waiters on one key",
      columns: [
        "library",
        "waiters",
        "handoffs counted",
        "commands sent per handoff",
        "commands run per handoff (incl. inside scripts)",
      ],
      rows: sweep,
      notes: [
        `${WAITER_COUNTS.join(", ")} waiters on one key in this process, each releasing at once on its grant (after every other waiter has waited 2 ms); counted over a window of the run (${WAITERS_MS / 1000} s less 300 ms; redlock: 3 s less 300 ms): sent = commands leaving the clients (counted in ioredis); run = INFO commandstats deltas, commands inside scripts included`,
        `@locks/redis: a release wakes one waiter per backend instance (fair: only the head's), so the cost grows with instances (here up to ${INSTANCES}), not waiters; the pollers' cost grows with the waiters, and fewer handoffs fit in the window`,
      ],
    });
  } finally {
    await admin.quit();
    await Promise.allSettled(servers.map((s) => s.stop()));
  }
  return tables;
};

export default suite;
