import { spawn } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { redisCommand } from "./probe.js";
import { ManagedServer, type ServerProcess } from "./process.js";
import { startInTempDir } from "./start.js";
import { freePort, requireBinary, tail, waitFor } from "./util.js";

/** A redis-server listening on 127.0.0.1 only. */
export interface RedisServer extends ServerProcess {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The private temporary directory (data, AOF, log `redis.log`). */
  readonly dir: string;
}

export interface RedisOptions {
  /** Turn on the append-only file (default false: no persistence at all). */
  appendonly?: boolean;
  /** AOF fsync policy when `appendonly` is on (Redis' default: everysec). */
  appendfsync?: "always" | "everysec" | "no";
  /** Extra redis-server arguments, e.g. `["--maxmemory", "10mb"]`. */
  args?: string[];
  /** Readiness deadline (default 30 s). */
  startTimeoutMs?: number;
}

class RedisServerImpl extends ManagedServer implements RedisServer {
  readonly host = "127.0.0.1" as const;
  readonly url: string;

  constructor(
    readonly port: number,
    readonly dir: string,
    args: string[],
    startTimeoutMs: number | undefined,
  ) {
    const binary = requireBinary("redis-server", "redis-server", "REDIS_URL");
    const socket = join(dir, "redis.sock");
    super({
      describe: () => `redis-server on 127.0.0.1:${port}`,
      spawnSpec: () => ({
        command: binary,
        args: [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--protected-mode",
          "yes",
          "--save",
          "",
          "--appendonly",
          "no",
          "--dir",
          dir,
          "--unixsocket",
          socket,
          "--unixsocketperm",
          "700",
          "--daemonize",
          "no",
          "--logfile",
          "",
          ...args,
        ],
        cwd: dir,
        logFile: join(dir, "redis.log"),
      }),
      // Through the private Unix socket, so a server of another process that
      // took the port cannot answer for this one (and TCP is bound first).
      probe: async () =>
        (await redisCommand({ path: socket }, ["PING"], { timeoutMs: 1_000 })) === "PONG",
      stopSignal: "SIGTERM",
      dir,
      ...(startTimeoutMs !== undefined ? { startTimeoutMs } : {}),
    });
    this.url = `redis://127.0.0.1:${port}`;
  }
}

function redisArgs(options: RedisOptions): string[] {
  const args: string[] = [];
  if (options.appendonly) {
    args.push("--appendonly", "yes", "--appendfsync", options.appendfsync ?? "everysec");
  } else if (options.appendfsync) {
    args.push("--appendfsync", options.appendfsync);
  }
  return [...args, ...(options.args ?? [])];
}

async function startRedisWith(
  prefix: string,
  options: RedisOptions,
  extraArgs: (dir: string) => Promise<string[]>,
): Promise<RedisServerImpl> {
  return startInTempDir(
    prefix,
    async (port, dir) =>
      new RedisServerImpl(
        port,
        dir,
        [...(await extraArgs(dir)), ...redisArgs(options)],
        options.startTimeoutMs,
      ),
  );
}

/**
 * Starts a redis-server on a free loopback port in a fresh temporary
 * directory; without options it keeps no data on disk (`--save ""
 * --appendonly no`).
 */
export function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  return startRedisWith("redis", options, async () => []);
}

/** Stops every server, ignoring individual failures, and rethrows the first. */
async function stopAll(servers: readonly ServerProcess[]): Promise<void> {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Starts `count` independent servers at once (the members of a Redlock). */
export async function startRedisGroup(
  count: number,
  options: RedisOptions = {},
): Promise<RedisServer[]> {
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`startRedisGroup: count must be a positive integer, got ${count}`);
  }
  const results = await Promise.allSettled(
    Array.from({ length: count }, () => startRedis(options)),
  );
  const servers = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) {
    await stopAll(servers).catch(() => {});
    throw (failed as PromiseRejectedResult).reason;
  }
  return servers;
}

/** A Redis Cluster on loopback: masters, and `replicas` replicas of each. */
export interface RedisClusterHandle {
  /** Every node, masters first as created (roles change after a failover: see {@link masterOf}). */
  readonly nodes: RedisServer[];
  /** What a cluster client needs, e.g. `new Redis.Cluster(handle.startupNodes)`. */
  readonly startupNodes: { host: string; port: number }[];
  /**
   * Resolves when every running node reports `cluster_state:ok` and knows
   * every node, and every running replica's link to its master is up.
   */
  waitForOk(timeoutMs?: number): Promise<void>;
  /** The running node that serves `key`'s slot as a master now (as a running node sees it). */
  masterOf(key: string): Promise<RedisServer>;
  /** The running replicas of `master`, as `master` itself reports them. */
  replicasOf(master: RedisServer): Promise<RedisServer[]>;
  stop(): Promise<void>;
}

export interface RedisClusterOptions extends RedisOptions {
  /** Number of masters, at least 3 (redis-cli's minimum); default 3. */
  masters?: number;
  /** Replicas per master (default 0); with 1, a killed master's replica takes over its slots. */
  replicas?: number;
  /** `cluster-node-timeout` in ms (default 2 000, so failures are noticed quickly). */
  nodeTimeoutMs?: number;
}

function runRedisCli(args: string[], logFile: string, timeoutMs: number): Promise<string> {
  const binary = requireBinary("redis-cli", "redis-tools");
  return new Promise<string>((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(output);
      else {
        reject(
          new Error(
            `redis-cli ${args.join(" ")} failed (code ${code}, signal ${signal}):\n${output}\n${tail(logFile)}`,
          ),
        );
      }
    });
  });
}

async function clusterOk(node: RedisServer, expectedNodes: number): Promise<boolean> {
  const info = await redisCommand(node.url, ["CLUSTER", "INFO"], { timeoutMs: 1_000 });
  if (typeof info !== "string") return false;
  if (
    !/cluster_state:ok/.test(info) ||
    !/cluster_slots_ok:16384/.test(info) ||
    !new RegExp(`cluster_known_nodes:${expectedNodes}\\b`).test(info)
  ) {
    return false;
  }
  // A replica counts once it has synced with its master (it can take over only then).
  const replication = await redisCommand(node.url, ["INFO", "replication"], { timeoutMs: 1_000 });
  return (
    typeof replication === "string" &&
    (/role:master/.test(replication) || /master_link_status:up/.test(replication))
  );
}

/** One line of CLUSTER NODES: `id host:port@cport flags master ping pong epoch link slot...`. */
interface ClusterNodeLine {
  port: number;
  flags: string[];
  slots: [number, number][];
}

function parseClusterNodes(text: string): ClusterNodeLine[] {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const fields = line.trim().split(" ");
      const address = fields[1] ?? "";
      const port = Number(address.slice(address.lastIndexOf(":") + 1).split("@")[0]);
      // Slot fields are "n" or "a-b"; "[n->-id]" entries are migrations.
      const slots = fields
        .slice(8)
        .filter((f) => !f.startsWith("["))
        .map((f) => {
          const [from, to] = f.split("-").map(Number);
          return [from ?? 0, to ?? from ?? 0] as [number, number];
        });
      return { port, flags: (fields[2] ?? "").split(","), slots };
    });
}

/**
 * Starts `masters * (1 + replicas)` cluster-enabled servers, joins them with
 * `redis-cli --cluster create ... --cluster-replicas <replicas> --cluster-yes`
 * and resolves when every node reports `cluster_state:ok` (replicas: synced).
 * A killed master's replica is promoted after `nodeTimeoutMs` and a little
 * more; a restarted former master (same port, same `nodes.conf`) rejoins as a
 * replica of the promoted one.
 */
export async function startRedisCluster(
  options: RedisClusterOptions = {},
): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new RangeError(`startRedisCluster: masters must be an integer >= 3, got ${masters}`);
  }
  const replicas = options.replicas ?? 0;
  if (!Number.isInteger(replicas) || replicas < 0) {
    throw new RangeError(`startRedisCluster: replicas must be an integer >= 0, got ${replicas}`);
  }
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2_000;
  const results = await Promise.allSettled(
    Array.from({ length: masters * (1 + replicas) }, () =>
      startRedisWith("redis-cluster", options, async (dir) => [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        join(dir, "nodes.conf"),
        "--cluster-port",
        String(await freePort()),
        "--cluster-node-timeout",
        String(nodeTimeoutMs),
      ]),
    ),
  );
  const nodes: RedisServerImpl[] = results.flatMap((r) =>
    r.status === "fulfilled" ? [r.value] : [],
  );
  const stop = () => stopAll(nodes);
  try {
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const first = nodes[0]!;
    await runRedisCli(
      [
        "--cluster",
        "create",
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        "--cluster-replicas",
        String(replicas),
        "--cluster-yes",
      ],
      join(first.dir, "redis.log"),
      30_000,
    );
    const running = () => nodes.filter((n) => n.running);
    const nodesView = async (): Promise<ClusterNodeLine[]> => {
      for (const node of running()) {
        const text = await redisCommand(node.url, ["CLUSTER", "NODES"], {
          timeoutMs: 1_000,
        }).catch(() => undefined);
        if (typeof text === "string") return parseClusterNodes(text);
      }
      throw new Error("no running cluster node answers CLUSTER NODES");
    };
    const byPort = (port: number) => running().find((n) => n.port === port);
    const handle: RedisClusterHandle = {
      nodes,
      startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
      async waitForOk(timeoutMs = 20_000) {
        const start = performance.now();
        for (const node of running()) {
          await waitFor(() => clusterOk(node, nodes.length), {
            timeoutMs: Math.max(1, timeoutMs - (performance.now() - start)),
            message: `cluster_state:ok on ${node.url}`,
          });
        }
      },
      async masterOf(key) {
        const slot = await redisCommand(running()[0]?.url ?? first.url, [
          "CLUSTER",
          "KEYSLOT",
          key,
        ]);
        const owner = (await nodesView()).find(
          (line) =>
            line.flags.includes("master") &&
            !line.flags.includes("fail") &&
            line.slots.some(([from, to]) => Number(slot) >= from && Number(slot) <= to),
        );
        const server = owner && byPort(owner.port);
        if (!server) throw new Error(`no running master serves the slot of ${JSON.stringify(key)}`);
        return server;
      },
      async replicasOf(master) {
        const info = await redisCommand(master.url, ["INFO", "replication"], { timeoutMs: 1_000 });
        const ports = [...String(info).matchAll(/^slave\d+:.*port=(\d+)/gm)].map((m) =>
          Number(m[1]),
        );
        return ports.flatMap((port) => byPort(port) ?? []);
      },
      stop,
    };
    await handle.waitForOk();
    return handle;
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
}
