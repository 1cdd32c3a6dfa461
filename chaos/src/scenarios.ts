import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  pgQuery,
  startEtcdCluster,
  startMariadb,
  startPostgres,
  startProxy,
  startRedis,
  startRedisGroup,
  type TcpProxy,
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
    description: "3 processes; holder paused/killed, the leader SIGKILLed and restarted",
    ttlMs: 1_000,
    clients: 3,
    acquireTimeoutMs: 6_000,
    faultKinds: ["pause", "kill", "leader-restart"],
    weight: 1.2,
    async setup(): Promise<Environment> {
      const cluster = await startEtcdCluster({ members: 3 });
      return {
        spec: () => ({ kind: "etcd", hosts: cluster.endpoints }),
        faults: {
          "leader-restart": async () => {
            const leader = await cluster.leader();
            await leader.kill();
            await leader.restart();
            await cluster.leader();
            return { target: leader.name, note: "SIGKILL + restart" };
          },
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
