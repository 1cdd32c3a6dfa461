import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  pgQuery,
  type RedisClusterHandle,
  type RedisServer,
  redisCommand,
  startEtcdCluster,
  startMariadb,
  startPostgres,
  startProxy,
  startRedis,
  startRedisCluster,
  startRedisGroup,
  type TcpProxy,
  waitFor,
} from "@locks/testkit";
import mysql from "mysql2/promise";
import type { Rng } from "./prng.js";
import type { Environment, ScenarioDefinition } from "./run.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** libfaketime from Debian's `faketime` package, when installed; without it, no clock jumps. */
export const libfaketime: string | undefined = [
  "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
  "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
  "/usr/lib/faketime/libfaketime.so.1",
].find((path) => existsSync(path));

/** Clock files for libfaketime clients: the nemesis rewrites them to jump their wall clock. */
async function fakeClocks(dir: string, indexes: readonly number[]): Promise<Map<number, string>> {
  const files = new Map<number, string>();
  if (libfaketime === undefined) return files;
  for (const i of indexes) {
    const file = join(dir, `clock-${i}`);
    await writeFile(file, "+0\n");
    files.set(i, file);
  }
  return files;
}

/** Jumps one faketime client's wall clock by ±1 h (or back to real time). */
function clockJump(files: ReadonlyMap<number, string>) {
  return async (rng: Rng): Promise<{ target: string; note?: string }> => {
    const offset = rng.pick(["+1h", "-1h", "+0"]);
    if (files.size === 0) return { target: "none", note: "libfaketime not installed: skipped" };
    const [index, file] = rng.pick([...files.entries()]);
    await writeFile(file, `${offset}\n`);
    // libfaketime re-reads the file at most once a second (FAKETIME_CACHE_DURATION=1).
    await sleep(1_100);
    return { target: `client c${index}`, note: `wall clock ${offset}` };
  };
}

function blackhole(proxies: readonly TcpProxy[], ms: number, count = proxies.length) {
  return async (rng: Rng): Promise<{ target: string; note?: string }> => {
    const chosen = [...proxies.keys()].sort(() => rng.next() - 0.5).slice(0, count);
    for (const i of chosen) proxies[i]?.blackhole(true);
    await sleep(ms);
    for (const i of chosen) proxies[i]?.blackhole(false);
    return { target: `proxy ${chosen.join(",")}`, note: `${ms} ms` };
  };
}

/**
 * The master of the shard that holds the scenario's lock, and one of the lock's
 * key names there (its fence counter never expires): the only shard with data.
 */
async function lockShard(
  cluster: RedisClusterHandle,
): Promise<{ master: RedisServer; key: string } | undefined> {
  for (const node of cluster.nodes) {
    const [role, keys] = await Promise.all([
      redisCommand(node.url, ["ROLE"], { timeoutMs: 1_000 }),
      redisCommand(node.url, ["SCAN", "0", "MATCH", "locks:*", "COUNT", "1000"], {
        timeoutMs: 1_000,
      }),
    ]).catch(() => [undefined, undefined]); // a node that is down
    const key = Array.isArray(keys) && Array.isArray(keys[1]) ? keys[1][0] : undefined;
    if (Array.isArray(role) && role[0] === "master" && typeof key === "string") {
      return { master: node, key };
    }
  }
  return undefined;
}

/** Cuts the link of one client to its etcd member past the TTL, then heals it. */
function linkCut(proxies: readonly TcpProxy[], ms: number) {
  return async (rng: Rng): Promise<{ target: string; note?: string }> => {
    const i = rng.int(0, proxies.length - 1);
    const proxy = proxies[i];
    const reset = rng.next() < 0.5;
    proxy?.blackhole(true);
    if (reset) proxy?.resetAll();
    await sleep(ms);
    // The proxy drops bytes TCP had acknowledged (no network does): an HTTP/2 connection that
    // lost frames inside its stream stalls for good, so the heal resets what the cut left open.
    proxy?.blackhole(false);
    proxy?.resetAll();
    return {
      target: `link of client c${i}`,
      note: `${reset ? "reset, then " : ""}${ms} ms silent`,
    };
  };
}

export const scenarios: readonly ScenarioDefinition[] = [
  {
    name: "file",
    backend: "@locks/file",
    description:
      "4 processes on one directory; holder paused past staleness, holder SIGKILLed, wall clock of two clients jumped ±1 h (libfaketime)",
    ttlMs: 2_000,
    clients: 4,
    acquireTimeoutMs: 8_000,
    faultKinds: ["pause", "kill", "clock-jump"],
    weight: 1.2,
    async setup(): Promise<Environment> {
      const dir = await mkdtemp(join(tmpdir(), "locks-chaos-file-"));
      const clocks = await fakeClocks(dir, [2, 3]);
      return {
        spec: () => ({ kind: "file", directory: join(dir, "locks") }),
        fakeClock: clocks,
        libfaketime,
        faults: { "clock-jump": clockJump(clocks) },
        stop: () => rm(dir, { recursive: true, force: true }),
      };
    },
  },
  {
    name: "redis-aof",
    backend: "@locks/redis (one server, appendfsync always)",
    description:
      "3 processes through a TCP proxy; holder paused/killed, server SIGKILLed and restarted, blackhole past the TTL, 0.7 TTL delay, connection resets",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 5_000,
    faultKinds: ["pause", "kill", "server-restart", "blackhole", "delay", "reset"],
    weight: 1,
    async setup(): Promise<Environment> {
      const server = await startRedis({ appendonly: true, appendfsync: "always" });
      const proxy = await startProxy(server.url);
      return {
        spec: () => ({ kind: "redis", url: proxy.url ?? server.url }),
        faults: {
          "server-restart": async () => {
            await server.kill();
            await server.restart();
            return { target: "redis", note: "SIGKILL + restart" };
          },
          blackhole: blackhole([proxy], 1_500),
          delay: async () => {
            proxy.delay(700);
            await sleep(1_500);
            proxy.delay(0);
            return { target: "proxy", note: "700 ms per chunk for 1.5 s" };
          },
          reset: async () => {
            proxy.resetAll();
            return { target: "proxy" };
          },
        },
        async stop() {
          await proxy.close();
          await server.stop();
        },
      };
    },
  },
  {
    name: "redis-volatile",
    backend: "@locks/redis (one server, no persistence)",
    description:
      "3 processes; holder paused/killed, server SIGKILLed and restarted empty (documented: locks and token counter lost)",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 5_000,
    faultKinds: ["pause", "kill", "server-restart"],
    weight: 0.7,
    async setup(): Promise<Environment> {
      const server = await startRedis();
      return {
        spec: () => ({ kind: "redis", url: server.url }),
        faults: {
          "server-restart": async () => {
            await server.kill();
            await server.restart();
            return { target: "redis", note: "SIGKILL + restart, data lost" };
          },
        },
        documentedAfter: {
          "server-restart":
            "Redis without persistence: a restart loses every lock and the token counter. Another client can take a held key before the holder's next extension fails, and tokens start again from 1: the fenced store refuses every write until they pass the old maximum.",
        },
        stop: () => server.stop(),
      };
    },
  },
  {
    name: "redlock",
    backend: "@locks/redis (Redlock, 5 servers)",
    description:
      "4 processes, each member behind a proxy; holder paused/killed, one member killed and restarted after the TTL, 2 of 5 members blackholed (still grants), 3 of 5 blackholed (no grants, leases lost), wall clock of one client jumped ±1 h",
    ttlMs: 1_000,
    clients: 4,
    acquireTimeoutMs: 5_000,
    faultKinds: [
      "pause",
      "kill",
      "member-restart",
      "minority-blackhole",
      "majority-blackhole",
      "clock-jump",
    ],
    weight: 1.2,
    async setup(): Promise<Environment> {
      const servers = await startRedisGroup(5);
      const proxies = await Promise.all(servers.map((s) => startProxy(s.url)));
      const dir = await mkdtemp(join(tmpdir(), "locks-chaos-redlock-"));
      const clocks = await fakeClocks(dir, [3]);
      return {
        spec: () => ({
          kind: "redlock",
          urls: proxies.map((p, i) => p.url ?? servers[i]?.url ?? ""),
        }),
        fakeClock: clocks,
        libfaketime,
        faults: {
          "member-restart": async (rng) => {
            const i = rng.int(0, servers.length - 1);
            await servers[i]?.kill();
            // Restarted empty, but only after the TTL: the safe way the Redlock docs describe.
            await sleep(1_200);
            await servers[i]?.restart();
            return { target: `member ${i}`, note: "SIGKILL, restart empty after 1.2 s" };
          },
          "minority-blackhole": blackhole(proxies, 2_000, 2),
          "majority-blackhole": blackhole(proxies, 1_500, 3),
          "clock-jump": clockJump(clocks),
        },
        documentedAfter: {
          "member-restart":
            "Redlock with leases that are extended: a member restarted empty (even after the TTL) no longer has the holder's key, and extensions do not put it back. A holder whose key was on a bare majority including that member has lost its majority; another client can be granted before the holder's next extension (a third of the TTL) fails and its lease.signal aborts. Fencing refuses the older holder's writes once the newer one has written.",
        },
        async stop() {
          await Promise.all(proxies.map((p) => p.close()));
          await Promise.all(servers.map((s) => s.stop()));
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: "etcd",
    backend: "@locks/etcd (3 members)",
    description:
      "3 processes, each through a TCP proxy to its own member; holder paused/killed, the leader SIGKILLed and restarted, a client's link to its member cut past the TTL (silent, or reset then silent) and healed",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 6_000,
    faultKinds: ["pause", "kill", "leader-restart", "link-cut"],
    weight: 1.2,
    async setup(): Promise<Environment> {
      const cluster = await startEtcdCluster({ members: 3 });
      const proxies = await Promise.all(cluster.members.map((m) => startProxy(m.endpoint)));
      return {
        spec: (index) => {
          const proxy = proxies[index % proxies.length];
          return { kind: "etcd", hosts: proxy ? [`${proxy.host}:${proxy.port}`] : [] };
        },
        faults: {
          "leader-restart": async () => {
            const leader = await cluster.leader();
            await leader.kill();
            await leader.restart();
            await cluster.leader();
            return { target: leader.name, note: "SIGKILL + restart" };
          },
          "link-cut": linkCut(proxies, 2_000),
        },
        async stop() {
          await Promise.all(proxies.map((p) => p.close()));
          await cluster.stop();
        },
      };
    },
  },
  {
    name: "redis-cluster",
    backend: "@locks/redis (Redis Cluster, 3 masters with a replica each)",
    description:
      "3 processes; holder paused/killed, the master of the lock's shard SIGKILLed (its replica is promoted; the old master restarts as a replica): documented, a grant not yet replicated is lost with it, and the token counter with it",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 6_000,
    faultKinds: ["pause", "kill", "master-failover"],
    firstFault: "master-failover",
    // A failover and the old master's return take about 8 s of their own.
    weight: 0.5,
    async setup(): Promise<Environment> {
      const cluster = await startRedisCluster({ replicas: 1, nodeTimeoutMs: 1_000 });
      return {
        spec: () => ({ kind: "redis-cluster", nodes: cluster.startupNodes }),
        faults: {
          "master-failover": async () => {
            const shard = await lockShard(cluster);
            if (shard === undefined) return { target: "none", note: "no lock data yet: skipped" };
            const { master, key } = shard;
            await master.kill();
            const promoted = await waitFor(
              async () => {
                const now = await cluster.masterOf(key);
                return now.port !== master.port ? now : undefined;
              },
              { timeoutMs: 15_000, message: "a replica promoted" },
            );
            await master.restart();
            await cluster.waitForOk();
            return {
              target: `master :${master.port}`,
              note: `SIGKILL; replica :${promoted.port} promoted; restarted as its replica`,
            };
          },
        },
        documentedAfter: {
          "master-failover":
            "Redis Cluster replicates asynchronously: a grant (and its INCR of the token counter) that the replica had not received when the master died is lost with it. Another client can be granted a key that is still held, with a token that is not higher: the fenced store refuses that holder's writes until tokens pass the old maximum.",
        },
        stop: () => cluster.stop(),
      };
    },
  },
  {
    name: "postgres",
    backend: "@locks/postgres",
    description:
      "3 processes through a TCP proxy; holder paused (the session keeps the lock) or killed, pg_terminate_backend of the client sessions, connection resets, restart -m immediate",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 6_000,
    faultKinds: ["pause", "kill", "terminate-sessions", "reset", "server-restart"],
    weight: 1,
    async setup(): Promise<Environment> {
      const server = await startPostgres();
      const proxy = await startProxy(server.connectionString);
      return {
        spec: () => ({ kind: "postgres", connectionString: proxy.url ?? server.connectionString }),
        faults: {
          "terminate-sessions": async () => {
            const rows = await pgQuery(
              server.connectionString,
              "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            );
            return { target: "client sessions", note: `${rows[0]?.[0] ?? "?"} terminated` };
          },
          reset: async () => {
            proxy.resetAll();
            return { target: "proxy" };
          },
          "server-restart": async () => {
            await server.restart({ immediate: true });
            return { target: "postgres", note: "restart -m immediate" };
          },
        },
        async stop() {
          await proxy.close();
          await server.stop();
        },
      };
    },
  },
  {
    name: "mysql",
    backend: "@locks/mysql",
    description:
      "3 processes through a TCP proxy, heartbeatMs 300; holder paused (the session keeps the lock) or killed, KILL of the client sessions, connection resets, blackhole past two heartbeats, server restart",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 6_000,
    faultKinds: ["pause", "kill", "kill-sessions", "reset", "blackhole", "server-restart"],
    weight: 1,
    async setup(): Promise<Environment> {
      const server = await startMariadb();
      const proxy = await startProxy(server.url);
      const uri = proxy.url ?? server.url;
      return {
        spec: () => ({ kind: "mysql", uri, heartbeatMs: 300 }),
        faults: {
          "kill-sessions": async () => {
            const admin = await mysql.createConnection(server.url);
            try {
              const [rows] = await admin.query(
                "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = 'locks' AND ID <> CONNECTION_ID()",
              );
              const ids = (rows as { id: number }[]).map((row) => Number(row.id));
              for (const id of ids) await admin.query(`KILL ${id}`).catch(() => undefined);
              return { target: "client sessions", note: `${ids.length} killed` };
            } finally {
              await admin.end();
            }
          },
          reset: async () => {
            proxy.resetAll();
            return { target: "proxy" };
          },
          // Longer than two heartbeats: the holders declare their leases lost while the server
          // still holds the locks for their silent sessions.
          blackhole: blackhole([proxy], 1_500),
          "server-restart": async () => {
            await server.restart();
            return { target: "mariadb", note: "restart" };
          },
        },
        async stop() {
          await proxy.close();
          await server.stop();
        },
      };
    },
  },
];
