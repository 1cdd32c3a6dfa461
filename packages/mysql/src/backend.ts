import {
  type Attempt,
  type Backend,
  type BackendHost,
  backendUnavailable,
  type Capabilities,
  createRequest,
  isLockError,
  type KeyStatus,
  type LockRequest,
  lockClosed,
} from "@locks/core/backend";
import type { ResolvedOptions } from "./options.js";
import { type Hold, Session } from "./session.js";

const NAME = "mysql";
const NOT_GRANTED: Attempt<Hold> = Object.freeze({ granted: false });

/** ER_NO_SUCH_TABLE, and the privilege errors (table, database, command). */
const NO_SUCH_TABLE = 1146;
const DENIED = new Set([1142, 1044, 1045, 1227]);

/** The lock's name on the server: SHA-256 of (namespace, key) in hex, exactly MySQL's 64 characters. */
function lockName(request: LockRequest): string {
  return request.digest.toString("hex");
}

function errno(error: unknown): number | undefined {
  const code = (error as { errno?: unknown } | null)?.errno;
  return typeof code === "number" ? code : undefined;
}

/**
 * MySQL and MariaDB named locks (`GET_LOCK`), all held on one session
 * connection. Every wait polls (the core's): the server's own wait would
 * need a connection per waiter, and gives no FIFO order either.
 */
export class MysqlBackend implements Backend<Hold> {
  readonly name = NAME;
  readonly capabilities: Capabilities = Object.freeze({
    scope: "cluster",
    ttl: false,
    fencing: true,
    // Named locks are exclusive only: no honest readers/writer or slots without a second protocol.
    shared: false,
    semaphore: false,
    fair: false,
    notify: false,
  });

  readonly #options: ResolvedOptions;
  /**
   * Takes the lock and bumps the key's token in one statement: `GET_LOCK` in
   * the WHERE of an upsert whose `LAST_INSERT_ID(expr)` hands back the new
   * token (as the OK packet's insert id). Not granted: no row, nothing written.
   */
  readonly #take: string;
  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  #host: BackendHost<Hold> | undefined;
  /** A given connection was adopted once; it cannot be replaced when it dies. */
  #adopted = false;
  #closed = false;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#take =
      `INSERT INTO ${options.table} (k, token) SELECT UNHEX(?), LAST_INSERT_ID(1) FROM DUAL ` +
      "WHERE GET_LOCK(?, 0) = 1 ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)";
  }

  bind(host: BackendHost<Hold>): void {
    this.#host = host;
  }

  async tryAcquire(request: LockRequest): Promise<Attempt<Hold>> {
    const session = await this.#live();
    const name = lockName(request);
    // This session holds it, or asks for it: GET_LOCK would grant it once more.
    if (session.names.has(name)) return NOT_GRANTED;
    session.names.set(name, undefined);
    try {
      const token = await this.#attempt(session, name);
      if (token === undefined) {
        session.names.delete(name);
        return NOT_GRANTED;
      }
      if (session.dead) throw new Error("the connection to MySQL was lost right after the grant");
      const hold: Hold = { session, name };
      session.names.set(name, hold);
      session.watch();
      return { granted: true, fencingToken: token, hold };
    } catch (error) {
      session.names.delete(name);
      throw error;
    }
  }

  /** Named locks have no TTL: a lock is held as long as its session lives and holds it. */
  async extend(_request: LockRequest, hold: Hold): Promise<boolean> {
    const { session, name } = hold;
    if (session.dead || session.names.get(name) !== hold) return false;
    try {
      const rows = await session.query<{ mine: unknown }[]>(
        "SELECT IS_USED_LOCK(?) = CONNECTION_ID() AS mine",
        [name],
      );
      return Number(rows[0]?.mine) === 1 && session.names.get(name) === hold;
    } catch (error) {
      if (session.dead) return false;
      throw error;
    }
  }

  /**
   * Releases the hold's lock on its session. With `hold` undefined (an
   * attempt failed, and may have taken the lock before its upsert failed),
   * the name is released on the session unless the session holds or asks
   * for it under another lease. Any failure but a dead session leaves an
   * unknown state: the session is ended, which frees every lock on it (the
   * others are reported lost).
   */
  async release(request: LockRequest, hold: Hold | undefined): Promise<void> {
    const name = lockName(request);
    const session = hold?.session ?? this.#session;
    if (session === undefined || session.dead) return;
    if (hold !== undefined ? session.names.get(name) !== hold : session.names.has(name)) return;
    session.names.delete(name);
    session.watch();
    // Sent before any later attempt on this session: one connection runs its statements in order.
    await session
      .query("DO RELEASE_LOCK(?)", [name])
      .catch((error: unknown) => session.fail(error));
  }

  /** Who holds a key: `IS_USED_LOCK`, and the token of the last grant from the fencing table. */
  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    const name = lockName(createRequest({ namespace, key }));
    try {
      const session = await this.#live();
      const rows = await session.query<{ id: unknown }[]>("SELECT IS_USED_LOCK(?) AS id", [name]);
      if (rows[0]?.id === null || rows[0]?.id === undefined) return { held: false, holders: [] };
      const tokens = await session
        .query<{ token: unknown }[]>(
          `SELECT token FROM ${this.#options.table} WHERE k = UNHEX(?)`,
          [name],
        )
        .catch(() => []);
      const token = tokens[0]?.token;
      const fencing = token === undefined ? {} : { fencingToken: BigInt(String(token)) };
      return { held: true, limit: 1, holders: [{ mode: "exclusive", ...fencing }] };
    } catch (error) {
      // Called by tools directly, not through the core: its errors are mapped here.
      throw isLockError(error) ? error : backendUnavailable(NAME, error);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const connecting = this.#connecting;
    const session = this.#session ?? (await connecting?.catch(() => undefined));
    this.#session = undefined;
    await session?.close();
  }

  /** One attempt; the new token, or undefined when another session holds the name. */
  async #attempt(session: Session, name: string): Promise<bigint | undefined> {
    type Ok = { affectedRows: number; insertId: number | string };
    const take = (): Promise<Ok> => session.query<Ok>(this.#take, [name, name]);
    const result = await take().catch(async (error: unknown) => {
      if (errno(error) !== NO_SUCH_TABLE) throw this.#explain(error);
      await this.#createTable(session);
      return take().catch((again: unknown) => {
        throw this.#explain(again);
      });
    });
    return result.affectedRows === 0 ? undefined : BigInt(String(result.insertId));
  }

  async #createTable(session: Session): Promise<void> {
    await session
      .query(
        `CREATE TABLE IF NOT EXISTS ${this.#options.table} ` +
          "(k BINARY(32) NOT NULL PRIMARY KEY, token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
      )
      .catch((error: unknown) => {
        throw this.#explain(error);
      });
  }

  /** A privilege error, in words that say what to grant. */
  #explain(error: unknown): unknown {
    const code = errno(error);
    if (code === undefined || !DENIED.has(code)) return error;
    const { table } = this.#options;
    return backendUnavailable(
      NAME,
      new Error(
        `the fencing table ${table} cannot be created or written: ${(error as Error).message}. ` +
          `Create it once as an administrator: CREATE TABLE ${table} (k BINARY(32) NOT NULL PRIMARY KEY, ` +
          `token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB, and GRANT SELECT, INSERT, UPDATE ON it to this user`,
        { cause: error },
      ),
    );
  }

  /** The session, (re)connected when needed; a given connection only once. */
  #live(): Promise<Session> {
    const session = this.#session;
    if (session !== undefined && !session.dead) return Promise.resolve(session);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<Session> {
    if (this.#closed || this.#host?.closing.aborted === true) throw lockClosed("mysql backend");
    if (this.#options.connection !== undefined) {
      if (this.#adopted) throw new Error("the connection given to mysqlBackend was lost");
      this.#adopted = true;
    }
    const session = await Session.open(this.#options, (holds, cause) => {
      for (const hold of holds) this.#host?.lost(hold, "the MySQL session ended", cause);
    });
    if (this.#closed) {
      await session.close();
      throw lockClosed("mysql backend");
    }
    this.#session = session;
    return session;
  }
}
