import { invalidArgument } from "@locks/core";
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
   * one that does not answer within the same time is closed, and its leases
   * are signalled lost. It keeps lock-holding sessions from being idle (so a
   * server-side `idle_session_timeout` only ends the sessions of dead
   * clients) and bounds how long a silent network partition goes unnoticed.
   * 0 turns it off. Default 0.
   */
  heartbeatMs?: number;
}

/** Options with defaults applied, validated. */
export interface ResolvedOptions {
  readonly clientConfig: ClientConfig | undefined;
  readonly client: Client | undefined;
  /** Quoted, schema-qualified as given: usable as an identifier and as `regclass` text. */
  readonly sequence: string;
  readonly channel: string;
  readonly maxConnections: number;
  readonly lockTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly heartbeatMs: number;
  readonly connectTimeoutMs: number;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
const KNOWN = new Set([
  "connectionString",
  "clientConfig",
  "client",
  "fencingSequence",
  "notifyChannel",
  "maxConnections",
  "lockTimeoutMs",
  "idleTimeoutMs",
  "connectTimeoutMs",
  "heartbeatMs",
]);

/** Validates the factory options synchronously, before any I/O. */
export function resolveOptions(options: PostgresBackendOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", "must be an object");
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN.has(name)) throw invalidArgument(`options.${name}`, "is not a known option");
  }
  const { connectionString, clientConfig, client } = options;
  if (
    connectionString !== undefined &&
    (typeof connectionString !== "string" || connectionString === "")
  ) {
    throw invalidArgument("connectionString", "must be a non-empty string");
  }
  if (clientConfig !== undefined && (typeof clientConfig !== "object" || clientConfig === null)) {
    throw invalidArgument("clientConfig", "must be an object of pg.Client settings");
  }
  if (client !== undefined) {
    if (!isClient(client)) {
      throw invalidArgument("client", "must be a pg.Client (a pg.Pool would not keep a session)");
    }
    if (connectionString !== undefined || clientConfig !== undefined) {
      throw invalidArgument("client", "cannot be combined with connectionString or clientConfig");
    }
  } else if (connectionString === undefined && clientConfig === undefined) {
    throw invalidArgument("options", "need a connectionString, a clientConfig or a client");
  }

  const maxConnections =
    client !== undefined ? 1 : integer(options.maxConnections, "maxConnections", 10, 1);
  if (
    client !== undefined &&
    options.maxConnections !== undefined &&
    options.maxConnections !== 1
  ) {
    throw invalidArgument(
      "maxConnections",
      "must be 1 (or unset) with a client: the backend opens no connection",
    );
  }
  const lockTimeoutMs = integer(options.lockTimeoutMs, "lockTimeoutMs", 30_000, 1);
  const idleTimeoutMs = integer(options.idleTimeoutMs, "idleTimeoutMs", 10_000, 0);
  const connectTimeoutMs = integer(options.connectTimeoutMs, "connectTimeoutMs", 10_000, 1);
  const heartbeatMs = integer(options.heartbeatMs, "heartbeatMs", 0, 0);

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
    sequence: qualifiedName(options.fencingSequence ?? "locks_fencing", "fencingSequence"),
    channel: identifier(options.notifyChannel ?? "locks_release", "notifyChannel"),
    maxConnections,
    lockTimeoutMs,
    idleTimeoutMs,
    heartbeatMs,
    connectTimeoutMs,
  };
}

function isClient(value: unknown): value is Client {
  const c = value as Partial<Client> & { totalCount?: unknown };
  return (
    typeof c === "object" &&
    c !== null &&
    typeof c.query === "function" &&
    typeof c.on === "function" &&
    typeof c.escapeIdentifier === "function" &&
    c.totalCount === undefined
  );
}

function integer(value: unknown, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" ||
    !Number.isSafeInteger(value) ||
    value < min ||
    value > 2_147_483_647
  ) {
    throw invalidArgument(name, `must be an integer from ${min} to 2147483647`);
  }
  return value;
}

function identifier(value: unknown, name: string): string {
  if (typeof value !== "string" || !IDENTIFIER.test(value)) {
    throw invalidArgument(
      name,
      "must be an identifier: a letter or _, then letters, digits, _ or $ (at most 63)",
    );
  }
  return value;
}

/** `name` or `schema.name`, each part quoted. */
function qualifiedName(value: unknown, name: string): string {
  if (typeof value !== "string") throw invalidArgument(name, "must be a string");
  const parts = value.split(".");
  if (parts.length > 2) throw invalidArgument(name, 'must be "name" or "schema.name"');
  return parts.map((part) => `"${identifier(part, name)}"`).join(".");
}
