import { type Check, check, defineOptions, invalidArgument } from "@locks/core/backend";
import type { Connection, Pool, PoolConnection } from "mysql2/promise";

/** Options of {@link mysqlBackend}: exactly one of `uri`, `pool` or `connection`. */
export interface MysqlBackendOptions {
  /**
   * Where to connect, e.g. `mysql://user:password@host:3306/app`. The backend
   * opens its own session connection (again after it dies) and closes it in
   * `close()`. The URI must select a database: the fencing table lives there.
   */
  uri?: string;
  /**
   * A `mysql2/promise` pool: the backend takes one connection from it and
   * keeps it for its whole life as its session (named locks belong to the
   * session; a connection that went back to the pool after each query would
   * hand the locks to whoever borrows it next). It goes back to the pool in
   * `close()`, after every lock on it was released; the pool is never closed.
   */
  pool?: Pool;
  /**
   * A connected `mysql2/promise` connection, dedicated to the locks (no
   * transaction left open on it, never handed to anyone else): it holds every
   * lock. Never closed by the backend; once it dies, later calls fail with
   * `BACKEND_UNAVAILABLE`. A `Pool` is refused here: pass it as `pool`.
   */
  connection?: Connection | PoolConnection;
  /**
   * The InnoDB table fencing tokens come from, created on first use (`CREATE
   * TABLE IF NOT EXISTS`): a name, or `database.name`. Default `locks_fencing`.
   */
  fencingTable?: string;
  /**
   * Every this many ms, a session that holds locks or runs a statement runs
   * `SELECT 1`; one that has not answered for twice that time is torn down:
   * its leases are signalled lost, its statements fail (a silent network
   * partition). 0 turns it off. Default 0.
   */
  heartbeatMs?: number;
  /**
   * With `uri`: most connections the backend opens at once, the session
   * connection plus one per wait blocked in the server (`GET_LOCK` with a
   * timeout; that connection then holds the lock until its release). Waits
   * beyond it poll; 1 makes every wait poll. With `pool` or `connection`
   * every wait polls. Default 10.
   */
  maxConnections?: number;
  /** How long connecting may take, in ms (mysql2's `connectTimeout`). Default 10 000. */
  connectTimeoutMs?: number;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,63}$/;
const MAX_MS = 2_147_483_647;

/** `name` or `database.name`, each part quoted with backticks. */
const tableName: Check<string> = (value, name) => {
  const parts = check.string(value, name).split(".");
  if (parts.length > 2 || !parts.every((part) => IDENTIFIER.test(part))) {
    throw invalidArgument(
      name,
      'must be "table" or "database.table", each a letter or _, then letters, digits, _ or $',
    );
  }
  return parts.map((part) => `\`${part}\``).join(".");
};

type Shape = { getConnection?: unknown; query?: unknown; connection?: unknown; pool?: unknown };

/** The promise API's Pool wraps a callback pool (`pool`); the callback Pool has `promise()`. */
const isPool = (v: Shape): boolean =>
  typeof v.getConnection === "function" && typeof v.pool === "object";

/** A promise connection wraps a callback connection (`connection`); a pool has `getConnection`. */
const isConnection = (v: Shape): boolean =>
  typeof v.query === "function" && typeof v.connection === "object" && !("getConnection" in v);

const parse = defineOptions({
  uri: check.string,
  pool: check.instance<Pool>("a mysql2/promise Pool", isPool),
  connection: check.instance<Connection>(
    "a mysql2/promise Connection: a Pool hands each query to any of its connections, and named " +
      "locks belong to one session (pass a Pool as `pool`, the backend then keeps one connection of it)",
    isConnection,
  ),
  fencingTable: tableName,
  heartbeatMs: check.integer(0, MAX_MS),
  maxConnections: check.integer(1, 100_000),
  connectTimeoutMs: check.integer(1, MAX_MS),
});

/** Validates the factory options synchronously, before any I/O. */
export function resolveOptions(input: MysqlBackendOptions) {
  const options = parse(input);
  const given = [options.uri, options.pool, options.connection].filter((v) => v !== undefined);
  if (given.length !== 1) {
    throw invalidArgument("options", "need exactly one of uri, pool or connection");
  }
  return {
    ...options,
    table: options.fencingTable ?? "`locks_fencing`",
    heartbeatMs: options.heartbeatMs ?? 0,
    maxConnections: options.uri === undefined ? 1 : (options.maxConnections ?? 10),
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
  };
}

export type ResolvedOptions = ReturnType<typeof resolveOptions>;
