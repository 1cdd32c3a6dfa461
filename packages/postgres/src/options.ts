import { type Check, check, defineOptions, invalidArgument } from "@locks/core/backend";
import type { Client, ClientConfig } from "pg";

/** Options of {@link postgresBackend}: `connectionString` (or `clientConfig`), or a `client`. */
export interface PostgresBackendOptions {
  /**
   * Where to connect, e.g. `postgresql://user@host:5432/db`. The backend opens
   * its own connections (a session connection, plus one per concurrent wait)
   * and closes them in `close()`.
   */
  connectionString?: string;
  /**
   * Further settings for the connections the backend opens (ssl, password,
   * keepAlive, ...), as for `new pg.Client(config)`. `pipeline` is always on.
   */
  clientConfig?: Omit<ClientConfig, "pipeline">;
  /**
   * A connected `pg.Client` to hold the locks on, instead of connections of
   * the backend's own. Never closed by the backend. It must be a dedicated
   * session: not a client borrowed from a `pg.Pool` that goes back to it, not
   * a connection through a transaction-mode pooler. With a client, waits poll
   * (with notifications) rather than queue in the server, so they are not
   * FIFO, and a lost connection cannot be replaced: later calls fail with
   * `BACKEND_UNAVAILABLE`.
   */
  client?: Client;
  /**
   * The sequence fencing tokens come from, created if missing (`CREATE
   * SEQUENCE IF NOT EXISTS`). A name, optionally schema-qualified
   * (`"locks.fencing"`); each part is quoted, so it is case-sensitive.
   * Default `"locks_fencing"`.
   */
  fencingSequence?: string;
  /**
   * The table each grant is noted in (its fencing token, mode, limit and
   * `holder` label), so that `inspect` on any client reports them: advisory
   * locks carry no data. Created if missing (`CREATE UNLOGGED TABLE IF NOT
   * EXISTS`); a name, optionally schema-qualified, each part quoted.
   * Default `"locks_holders"`.
   */
  holdersTable?: string;
  /** The LISTEN/NOTIFY channel that wakes polling waiters. Default `"locks_release"`. */
  notifyChannel?: string;
  /**
   * Most connections the backend opens at once: the session connection plus
   * one per wait in the server's lock queue (a lock granted after a wait stays
   * on the connection that waited, until released), one of them kept ready as
   * a spare. Waits beyond it poll. 1 makes every wait poll (one connection in
   * all). Default 10.
   */
  maxConnections?: number;
  /**
   * `lock_timeout` of a wait in the server's queue, in ms: a wait longer than
   * this re-enters the queue at its end. Bounds how long the server keeps a
   * waiter of a client that vanished. Default 30 000.
   */
  lockTimeoutMs?: number;
  /**
   * One idle queue connection is kept ready (so that a wait joins the
   * server's queue at once); others are closed after this many ms idle.
   * Default 10 000.
   */
  idleTimeoutMs?: number;
  /**
   * How long a new connection may take, in ms, connect and setup statements
   * together (a partition can swallow either); then the call fails with
   * `BACKEND_UNAVAILABLE`. Default 10 000.
   */
  connectTimeoutMs?: number;
  /**
   * Every this many ms, each connection that holds a lock runs `SELECT 1`;
   * one that has not answered for twice that time is closed, and its leases
   * are signalled lost. It keeps lock-holding sessions from being idle (so a
   * server-side `idle_session_timeout` only ends the sessions of dead
   * clients) and bounds how long a silent network partition goes unnoticed.
   * 0 turns it off. Default 0.
   */
  heartbeatMs?: number;
}

/**
 * Options with defaults applied, validated; `sequence` and `table` quoted,
 * usable as identifiers and as `regclass` text.
 */
export type ResolvedOptions = ReturnType<typeof resolveOptions>;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
/** PostgreSQL settings and pg's timeouts are 32-bit. */
const MAX_MS = 2_147_483_647;

const identifier: Check<string> = (value, name) => {
  if (typeof value !== "string" || !IDENTIFIER.test(value)) {
    throw invalidArgument(
      name,
      "must be an identifier: a letter or _, then letters, digits, _ or $ (at most 63)",
    );
  }
  return value;
};

/** `name` or `schema.name`, each part quoted. */
const qualifiedName: Check<string> = (value, name) => {
  const parts = check.string(value, name).split(".");
  if (parts.length > 2) throw invalidArgument(name, 'must be "name" or "schema.name"');
  return parts.map((part) => `"${identifier(part, name)}"`).join(".");
};

/** A pg.Client, not a pg.Pool (a pool has `totalCount`). */
function isClient(value: object): boolean {
  const c = value as Partial<Client> & { totalCount?: unknown };
  return (
    typeof c.query === "function" &&
    typeof c.on === "function" &&
    typeof c.escapeIdentifier === "function" &&
    c.totalCount === undefined
  );
}

const parse = defineOptions({
  connectionString: check.string,
  clientConfig: check.instance<ClientConfig>("an object of pg.Client settings", () => true),
  client: check.instance<Client>("a pg.Client (a pg.Pool would not keep a session)", isClient),
  fencingSequence: qualifiedName,
  holdersTable: qualifiedName,
  notifyChannel: identifier,
  maxConnections: check.integer(1, MAX_MS),
  lockTimeoutMs: check.integer(1, MAX_MS),
  idleTimeoutMs: check.integer(0, MAX_MS),
  connectTimeoutMs: check.integer(1, MAX_MS),
  heartbeatMs: check.integer(0, MAX_MS),
});

/** Validates the factory options synchronously, before any I/O. */
export function resolveOptions(input: PostgresBackendOptions) {
  const options = parse(input);
  const { connectionString, clientConfig, client, maxConnections } = options;
  if (client !== undefined) {
    if (connectionString !== undefined || clientConfig !== undefined) {
      throw invalidArgument(
        "options.client",
        "cannot be combined with connectionString or clientConfig",
      );
    }
    if (maxConnections !== undefined && maxConnections !== 1) {
      throw invalidArgument(
        "options.maxConnections",
        "must be 1 (or unset) with a client: the backend opens no connection",
      );
    }
  } else if (connectionString === undefined && clientConfig === undefined) {
    throw invalidArgument("options", "need a connectionString, a clientConfig or a client");
  }
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  return {
    clientConfig:
      client === undefined
        ? {
            connectionTimeoutMillis: connectTimeoutMs,
            ...clientConfig,
            ...(connectionString !== undefined ? { connectionString } : {}),
          }
        : undefined,
    client,
    sequence: options.fencingSequence ?? '"locks_fencing"',
    table: options.holdersTable ?? '"locks_holders"',
    channel: options.notifyChannel ?? "locks_release",
    maxConnections: client !== undefined ? 1 : (maxConnections ?? 10),
    lockTimeoutMs: options.lockTimeoutMs ?? 30_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 10_000,
    heartbeatMs: options.heartbeatMs ?? 0,
    connectTimeoutMs,
  };
}
