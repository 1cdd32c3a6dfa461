import { type Liveness, type LockMode, settledWithin } from "@locks/core/backend";
import pg, { type Client, type Notification } from "pg";
import type { ResolvedOptions } from "./options.js";
import { PID, type Statement, type Statements } from "./sql.js";

/** How long a connection may take to say goodbye before its socket is torn down. */
const CLOSE_GRACE_MS = 200;

/** A row as pg returns it; every column the backend reads is named in sql.ts. */
export type Row = Record<string, unknown>;

/** What the backend learns when a connection dies. */
export type DeathListener = (conn: Connection, cause: unknown) => void;

/** Two statements of one session ran in two server processes: a transaction-mode pooler. */
export function poolerError(first: number, second: number): Error {
  return new Error(
    `two statements on one connection ran in two server sessions (pid ${first}, then ${second}): ` +
      "a transaction-mode pooler (PgBouncer pool_mode=transaction) is in the way, and session-level " +
      "advisory locks would be silently dropped or leaked. Connect directly, or through a session-mode pool.",
  );
}

/** A lock held on a connection: what a grant hands the core as its `hold`, and gets back. */
export interface Hold {
  readonly conn: Connection;
  /** The advisory id: the key's, or the semaphore slot's. */
  readonly id: string;
  readonly mode: LockMode;
  readonly interest: string;
  /** A semaphore slot's presence and limit markers (released with it), by RELEASE_SLOT's order. */
  readonly markers: readonly [presence: string, a: string, b: string] | undefined;
  /** The grant's fencing token: its marker, and its row in the holders table when `noted`. */
  readonly token: bigint;
  /** The key's id (a slot's key's): its token markers' (see sql.statements). */
  readonly key: string;
  /** Labelled: the grant has a row in the holders table. */
  readonly noted: boolean;
}

/**
 * One PostgreSQL session: the backend's session connection, or a queue
 * connection that waits in the server's lock queue and then holds what it
 * got. Advisory locks belong to the session, so a lock is released on the
 * very connection that took it, and all of them vanish when it dies.
 *
 * The connection also keeps the local half of the bookkeeping: which lock
 * ids this session holds (or is asking for), since a session never conflicts
 * with itself (PostgreSQL would grant a second `pg_try_advisory_lock` of a
 * key it already holds), and the holds that live on it.
 */
export class Connection {
  readonly client: Client;
  /** Opened by the backend (and closed by it), or given by the user. */
  readonly owned: boolean;
  /** A queue connection, not the session. */
  readonly queue: boolean;
  /** The server process of this session, from setup. */
  pid = 0;
  dead = false;
  /**
   * Lock ids held or being asked for on this session, with their mode and
   * count; a semaphore's presence marker also with its limit: a limit-1
   * request of the same key on this session would not see the semaphore in
   * the server (a session never conflicts with itself).
   */
  readonly ids = new Map<string, { mode: LockMode; limit: number; count: number }>();
  /** The holds that live on this session. */
  readonly holds = new Set<Hold>();
  /** Proves the session alive while it holds locks (heartbeatMs). */
  liveness: Liveness | undefined;
  /** LISTEN was run on this session. */
  listening = false;
  /** Semaphore attempts in flight on this session. */
  askingSlots = 0;
  /** Waits in the server's queue, or holds a semaphore's turn (0 or 1). */
  waiting = false;
  /** For an idle queue connection: closes it after the idle timeout. */
  idleTimer: NodeJS.Timeout | undefined;

  readonly #options: ResolvedOptions;
  readonly #sql: Statements;
  readonly #onDeath: DeathListener;
  readonly #onError = (error: unknown): void => this.fail(error);
  readonly #onEnd = (): void => this.fail(new Error("the connection to PostgreSQL was closed"));
  #onNotification: ((message: Notification) => void) | undefined;
  #closed: Promise<void> | undefined;

  /**
   * The given client, or a connection of the backend's own (pipelined), a
   * queue connection or not; `open()` connects it.
   */
  constructor(options: ResolvedOptions, sql: Statements, onDeath: DeathListener, queue = false) {
    this.#options = options;
    this.#sql = sql;
    this.queue = queue;
    this.client = options.client ?? new pg.Client({ ...options.clientConfig, pipeline: true });
    this.owned = options.client === undefined;
    this.#onDeath = onDeath;
    this.client.on("error", this.#onError);
    this.client.on("end", this.#onEnd);
  }

  /** Connects a connection of ours and sets the session up, all within connectTimeoutMs. */
  async open(): Promise<void> {
    if (!this.owned) return this.#adopt();
    // The deadline covers the setup statements too: in a partition they would never be answered.
    const { connectTimeoutMs } = this.#options;
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      destroy(this.client);
    }, connectTimeoutMs);
    try {
      await this.client.connect();
      await this.#setup();
    } catch (error) {
      this.fail(error);
      await this.close();
      if (late) throw new Error(`no connection within ${connectTimeoutMs} ms`, { cause: error });
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sets up the user's client: listens to its events, never closes it. */
  async #adopt(): Promise<void> {
    if ((this.client as { _connected?: unknown })._connected === false) {
      throw new Error(
        "the pg.Client given to postgresBackend is not connected: call client.connect() first",
      );
    }
    try {
      await this.#setup();
    } catch (error) {
      this.detach();
      throw error;
    }
  }

  /** Runs a named statement; rejects with pg's error. A fatal error kills the connection first. */
  query(statement: Statement | string, values?: unknown[]): Promise<Row[]> {
    const config =
      typeof statement === "string"
        ? { text: statement, values }
        : { name: statement.name, text: statement.text, values };
    // Without pipelining (a given client), pg's own queue runs them one after the other.
    return this.client.query<Row>(config).then(
      (result) => result.rows,
      (error: unknown) => {
        if (isFatal(error)) this.fail(error);
        throw error;
      },
    );
  }

  /** Delivers this session's notifications on `channel` to `listener`. */
  onNotification(channel: string, listener: (payload: string) => void): void {
    this.#onNotification = (message) => {
      if (message.channel === channel && message.payload !== undefined) listener(message.payload);
    };
    this.client.on("notification", this.#onNotification);
  }

  /** Marks the session dead (once) and tells the backend; a connection of ours is torn down. */
  fail(cause: unknown): void {
    if (this.dead) return;
    this.dead = true;
    this.#stopTimers();
    if (this.owned) destroy(this.client);
    this.#onDeath(this, cause);
  }

  /** Stops listening to the client's events (a given client stays open). */
  detach(): void {
    this.client.off("error", this.#onError);
    this.client.off("end", this.#onEnd);
    if (this.#onNotification !== undefined) this.client.off("notification", this.#onNotification);
    this.#stopTimers();
  }

  /**
   * Closes a connection of ours: a graceful end, or a hard close when the
   * server does not answer within CLOSE_GRACE_MS. A given client is only detached.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    if (!this.owned) {
      this.detach();
      return;
    }
    this.#stopTimers();
    const failed = this.dead;
    this.dead = true;
    // Errors after this point are expected (the socket goes away); the listeners stay, so none is unhandled.
    // A failed connection, or one not set up yet, has nobody to say goodbye to.
    if (!failed && this.pid !== 0) await settledWithin(this.client.end(), CLOSE_GRACE_MS);
    destroy(this.client);
  }

  #stopTimers(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.liveness?.stop();
    this.liveness = undefined;
  }

  /** Records that this session holds (or asks for) `id` once more: a semaphore's presence marker with its limit. */
  hold(id: string, mode: LockMode, limit = 1): void {
    const entry = this.ids.get(id);
    if (entry === undefined) this.ids.set(id, { mode, limit, count: 1 });
    else entry.count++;
  }

  /** Forgets one hold of `id`. */
  unhold(id: string): void {
    const entry = this.ids.get(id);
    if (entry !== undefined && --entry.count <= 0) this.ids.delete(id);
  }

  async #setup(): Promise<void> {
    const { sequence, table, lockTimeoutMs } = this.#options;
    const [first] = await this.query(PID, [sequence, table]);
    if (first?.ready !== true) {
      // An identifier cannot be a parameter: `sequence` and `table` are quoted names from the options (options.ts).
      for (const create of [`CREATE SEQUENCE IF NOT EXISTS ${sequence}`, this.#sql.CREATE_TABLE]) {
        try {
          await this.query(create);
        } catch (error) {
          // Two clients creating it at once: one of them loses the race, and it exists.
          if (!isDuplicate(error)) throw error;
        }
      }
    }
    // lock_timeout (for waits; a given client keeps its own) only now: a short one could have
    // interrupted CREATE SEQUENCE in a busy catalog.
    const [row] = await this.query(this.#sql.SETUP, [this.owned ? String(lockTimeoutMs) : null]);
    this.pid = Number(row?.pid);
    if (this.pid !== Number(first?.pid)) throw poolerError(Number(first?.pid), this.pid);
  }
}

/** The SQLSTATE of a server error, if it is one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.length === 5 ? code : undefined;
}

/** 57014: query_canceled (pg_cancel_backend or statement_timeout); 55P03: lock_not_available (lock_timeout). */
export function isInterrupted(error: unknown): boolean {
  const state = sqlState(error);
  return state === "57014" || state === "55P03";
}

/** An error after which the session is gone (pg_terminate_backend, shutdown, crash). */
function isFatal(error: unknown): boolean {
  const severity = (error as { severity?: unknown } | null)?.severity;
  if (severity === "FATAL" || severity === "PANIC") return true;
  const state = sqlState(error);
  return state !== undefined && (state.startsWith("08") || state.startsWith("57P"));
}

/** 42P07 duplicate_table, 42710 duplicate_object (the table's row type), 23505 unique_violation (the catalog). */
function isDuplicate(error: unknown): boolean {
  const state = sqlState(error);
  return state === "42P07" || state === "42710" || state === "23505";
}

/** Tears the socket down at once; pg then fails every pending query and emits "end". */
function destroy(client: Client): void {
  const stream = (client as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
}
