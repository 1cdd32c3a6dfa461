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

/** A Redis Cluster of masters without replicas, every node on loopback. */
export interface RedisClusterHandle {
  readonly nodes: RedisServer[];
  /** What a cluster client needs, e.g. `new Redis.Cluster(handle.startupNodes)`. */
  readonly startupNodes: { host: string; port: number }[];
  /** Resolves when every live node reports `cluster_state:ok` and knows every node. */
  waitForOk(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface RedisClusterOptions extends RedisOptions {
  /** Number of masters, at least 3 (redis-cli's minimum); default 3. */
  masters?: number;
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
  return (
    /cluster_state:ok/.test(info) &&
    /cluster_slots_ok:16384/.test(info) &&
    new RegExp(`cluster_known_nodes:${expectedNodes}\\b`).test(info)
  );
}

/**
 * Starts `masters` cluster-enabled servers, joins them with
 * `redis-cli --cluster create ... --cluster-yes` and resolves when every
 * node reports `cluster_state:ok`.
 */
export async function startRedisCluster(
  options: RedisClusterOptions = {},
): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new RangeError(`startRedisCluster: masters must be an integer >= 3, got ${masters}`);
  }
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2_000;
  const results = await Promise.allSettled(
    Array.from({ length: masters }, () =>
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
  const nodes: RedisServer[] = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
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
        "0",
        "--cluster-yes",
      ],
      join(first.dir, "redis.log"),
      30_000,
    );
    const handle: RedisClusterHandle = {
      nodes,
      startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
      async waitForOk(timeoutMs = 20_000) {
        const start = performance.now();
        for (const node of nodes) {
          await waitFor(() => clusterOk(node, nodes.length), {
            timeoutMs: Math.max(1, timeoutMs - (performance.now() - start)),
            message: `cluster_state:ok on ${node.url}`,
          });
        }
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
