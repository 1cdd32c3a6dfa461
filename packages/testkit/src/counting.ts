import { execFile } from "node:child_process";
import { connect } from "node:net";
import type { EtcdServer } from "./etcd.js";
import type { MariadbServer } from "./mariadb.js";
import type { PostgresServer } from "./postgres.js";
import { httpRequest, pgQuery, redisCommand } from "./probe.js";
import type { RedisServer } from "./redis.js";
import { requireBinary } from "./util.js";

/** A server whose client requests {@link countRequests} can count (a cluster member is one too). */
export type CountedServer = RedisServer | EtcdServer | PostgresServer | MariadbServer;

/**
 * Probes made by this process per server address. Redis and MariaDB count
 * the probe's own command, visible to the next probe: subtracting the probes
 * made so far keeps the difference of two readings equal to the requests
 * other clients made between them.
 */
const probesMade = new Map<string, number>();

function countProbe(address: string): number {
  const before = probesMade.get(address) ?? 0;
  probesMade.set(address, before + 1);
  return before;
}

/**
 * The server's running total of client requests: only differences between
 * two readings mean something (requests made between them).
 * - redis: INFO stats `total_commands_processed`: every command the server
 *   ran, each command a script runs included (an EVALSHA whose script makes
 *   3 calls counts 4). {@link monitorRedis} counts what clients send.
 * - etcd: the sum of `grpc_server_msg_received_total` from `/metrics`: every
 *   unary RPC (Range, Txn, Put, LeaseGrant ...) and every message on a
 *   stream (a watch create or cancel, a lease keep-alive). Read over HTTP, so
 *   the probe costs no gRPC request. {@link countRequestsByMethod} splits it.
 * - postgres: transactions, `sum(xact_commit + xact_rollback)` over
 *   `pg_stat_database` without `template1`, where the probe runs its own.
 *   Each connection publishes its counts when it goes idle, at most once a
 *   second (else 10 s later) and when it closes (PostgreSQL 15's lazy
 *   statistics): read after a quiet spell of 11 s for an exact total. A new
 *   connection counts one transaction of its own (its start-up).
 * - mariadb: `SHOW GLOBAL STATUS LIKE 'Questions'` (statements sent by
 *   clients), read with the `mariadb` client.
 *
 * Sum the members of a Redis Cluster or etcd cluster for the whole cluster.
 */
export async function countRequests(server: CountedServer): Promise<number> {
  if ("endpoint" in server) {
    let total = 0;
    for (const count of Object.values(await countRequestsByMethod(server))) total += count;
    return total;
  }
  if ("connectionString" in server) return countPostgresTransactions(server);
  if ("limitedUrl" in server) return countMariadbQuestions(server);
  const prior = countProbe(server.url);
  const info = String(await redisCommand(server.url, ["INFO", "stats"]));
  const match = /total_commands_processed:(\d+)/.exec(info);
  if (!match) throw new Error(`no total_commands_processed in INFO stats of ${server.url}`);
  return Number(match[1]) - prior;
}

/**
 * etcd's gRPC request messages by method (`"Txn"`, `"Range"`, `"Watch"`,
 * `"LeaseKeepAlive"` ...), from `grpc_server_msg_received_total`.
 */
export async function countRequestsByMethod(server: EtcdServer): Promise<Record<string, number>> {
  const response = await httpRequest(`${server.endpoint}/metrics`);
  if (response.status !== 200) {
    throw new Error(`GET ${server.endpoint}/metrics answered ${response.status}`);
  }
  const counts: Record<string, number> = {};
  const line = /^grpc_server_msg_received_total\{([^}]*)\}\s+(\S+)$/gm;
  for (const [, labels, value] of response.body.matchAll(line)) {
    const method = /grpc_method="([^"]*)"/.exec(labels!)?.[1] ?? "?";
    counts[method] = (counts[method] ?? 0) + Number(value);
  }
  return counts;
}

async function countPostgresTransactions(server: PostgresServer): Promise<number> {
  const url = new URL(server.connectionString);
  url.pathname = "/template1";
  const rows = await pgQuery(
    url.toString(),
    "SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database " +
      "WHERE datname IS DISTINCT FROM 'template1'",
  );
  return Number(rows[0]?.[0]);
}

/**
 * PostgreSQL's statements run so far (top-level, utility ones such as BEGIN
 * and COMMIT included), published at once, unlike the transaction counts of
 * {@link countRequests}: for a server started with
 * `settings: { shared_preload_libraries: "pg_stat_statements" }`. The probe
 * runs in `template1` (where it creates the extension on first use) and is
 * not counted.
 */
export async function countStatements(server: PostgresServer): Promise<number> {
  const url = new URL(server.connectionString);
  url.pathname = "/template1";
  const rows = await pgQuery(
    url.toString(),
    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; " +
      "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements " +
      "WHERE dbid <> (SELECT oid FROM pg_database WHERE datname = 'template1')",
  );
  return Number(rows[0]?.[0]);
}

async function countMariadbQuestions(server: MariadbServer): Promise<number> {
  const prior = countProbe(server.url);
  const url = new URL(server.url);
  const client = requireBinary("mariadb", "mariadb-client");
  const output = await new Promise<string>((resolve, reject) => {
    execFile(
      client,
      [
        "--no-defaults",
        "--protocol=TCP",
        `--host=${url.hostname}`,
        `--port=${url.port}`,
        `--user=${decodeURIComponent(url.username)}`,
        `--password=${decodeURIComponent(url.password)}`,
        "--batch",
        "--skip-column-names",
        "--execute=SHOW GLOBAL STATUS LIKE 'Questions'",
      ],
      { timeout: 10_000 },
      (error, stdout) => (error ? reject(error) : resolve(stdout)),
    );
  });
  const match = /^Questions\s+(\d+)/m.exec(output);
  if (!match) throw new Error(`no Questions in SHOW GLOBAL STATUS of ${server.url}: ${output}`);
  // The client sends a statement of its own before SHOW STATUS.
  return Number(match[1]) - 2 * prior;
}

/** A running count of the requests clients send a redis-server, from MONITOR. */
export interface RedisMonitor {
  /** Commands clients sent (a script's EVALSHA counts one, the commands it runs none). */
  readonly requests: number;
  /** Commands scripts ran. */
  readonly scripted: number;
  close(): void;
}

/**
 * Counts client requests as they happen, unlike INFO's
 * `total_commands_processed`, which counts every command a script runs too.
 * MONITOR costs the server a little per command (it formats each one for
 * this connection). The monitor's own connection sends nothing else.
 */
export function monitorRedis(server: RedisServer): Promise<RedisMonitor> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: server.host, port: server.port });
    let pending = "";
    let started = false;
    const monitor = {
      requests: 0,
      scripted: 0,
      close: () => {
        socket.destroy();
      },
    };
    socket.setEncoding("utf8");
    socket.once("error", reject);
    socket.on("data", (chunk: string) => {
      const lines = (pending + chunk).split("\r\n");
      pending = lines.pop()!;
      for (const line of lines) {
        if (!started) {
          if (line !== "+OK") reject(new Error(`MONITOR answered ${line}`));
          started = true;
          resolve(monitor);
        } else if (/^\+[\d.]+ \[\d+ lua\]/.test(line)) monitor.scripted++;
        else if (line.startsWith("+")) monitor.requests++;
      }
    });
    socket.write("MONITOR\r\n");
  });
}
