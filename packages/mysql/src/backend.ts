import {
  type Attempt,
  type Backend,
  type BackendHost,
  backendUnavailable,
  type Capabilities,
  type Grant,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  lockClosed,
  onAbort,
  QueueLines,
  settledWithin,
  singleFlight,
  sleep,
  type WaitOptions,
} from "@locks/core/backend";
import type { ResolvedOptions } from "./options.js";
import { type Hold, Session } from "./session.js";

const NAME = "mysql";
const NOT_GRANTED: Attempt<Hold> = Object.freeze({ granted: false });

/** ER_NO_SUCH_TABLE, ER_BAD_FIELD_ERROR (a table of 0.1, without the label), ER_DUP_FIELDNAME. */
const NO_SUCH_TABLE = 1146;
const NO_SUCH_COLUMN = 1054;
const DUPLICATE_COLUMN = 1060;
/** The privilege errors (table, database, command). */
const DENIED = new Set([1142, 1044, 1045, 1227]);
/** ER_NO_SUCH_THREAD (the holder's session ended meanwhile), ER_KILL_DENIED_ERROR. */
const NO_SUCH_THREAD = 1094;
const KILL_DENIED = 1095;
/** The fencing table: the key's token, and the label of the grant with token `holder_token`. */
const COLUMNS =
  "(k BINARY(32) NOT NULL PRIMARY KEY, token BIGINT UNSIGNED NOT NULL, " +
  "holder VARBINARY(256) NULL, holder_token BIGINT UNSIGNED NULL) ENGINE=InnoDB";
const LABEL_COLUMNS =
  "ADD COLUMN holder VARBINARY(256) NULL, ADD COLUMN holder_token BIGINT UNSIGNED NULL";
const EVICTED = "the key was force-released";

/** A wait in the server is one GET_LOCK of at most this many seconds, then another. */
const WAIT_S = 30;
/** How long an aborted wait waits for the KILL of its connection before tearing its socket down. */
const KILL_GRACE_MS = 250;

/** The lock's name on the server: SHA-256 of (namespace, key) in hex, exactly MySQL's 64 characters. */
function lockName(key: KeyRef): string {
  return key.digest.toString("hex");
}

function errno(error: unknown): number | undefined {
  const code = (error as { errno?: unknown } | null)?.errno;
  return typeof code === "number" ? code : undefined;
}

/**
 * MySQL and MariaDB named locks (`GET_LOCK`). One session connection takes
 * every non-blocking attempt and holds what they grant; with a `uri`, a wait
 * blocks in the server on a connection of its own (up to maxConnections in
 * all), which then holds the lock it waited for until the release.
 */
export class MysqlBackend implements Backend<Hold> {
  readonly name = NAME;
  readonly capabilities: Capabilities;

  readonly #options: ResolvedOptions;
  /**
   * Takes the lock and bumps the key's token in one statement: `GET_LOCK` in
   * the WHERE of an upsert whose `LAST_INSERT_ID(expr)` hands back the new
   * token (as the OK packet's insert id). Not granted: no row, nothing written.
   * [without a label, with one]: a label is written with the token it belongs
   * to, so a later grant without one needs no write of its own to clear it.
   */
  readonly #take: readonly [string, string];
  /** The bare upsert, for a lock taken by a wait. */
  readonly #bump: readonly [string, string];
  /** The holder's session id, the key's token, and the label when it belongs to that token. */
  readonly #inspect: string;
  #session: Session | undefined;
  /** Wait connections, open or opening; each holds at most the lock it waited for. */
  readonly #waiters = new Set<Session>();
  /** Every connection of ours not closed yet, the ones still connecting included. */
  readonly #sessions = new Set<Session>();
  /** A wait connection whose lock was released, kept for the next wait: connecting costs more than a handover. */
  #spare: Session | undefined;
  /**
   * Waits beyond maxConnections, lined up by lock name behind this client's
   * wait connections for the name: each is handed the connection of the next
   * of them to end (see `acquire`).
   */
  readonly #lines = new QueueLines<Session>((session) => !session.dead && !this.#ending());
  /** One connect at a time, shared by every caller that needs the session meanwhile. */
  readonly #connectOnce = singleFlight(() => this.#connect());
  #host: BackendHost<Hold> | undefined;
  /** A given connection was adopted once; it cannot be replaced when it dies. */
  #adopted = false;
  #closed = false;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    const into = `INSERT INTO ${options.table} (k, token`;
    const locked = "FROM DUAL WHERE GET_LOCK(?, 0) = 1";
    const bump = "ON DUPLICATE KEY UPDATE token = LAST_INSERT_ID(token + 1)";
    // Assignments run left to right: `holder_token = token` reads the new token.
    const label = ", holder = ?, holder_token = token";
    this.#take = [
      `${into}) SELECT UNHEX(?), LAST_INSERT_ID(1) ${locked} ${bump}`,
      `${into}, holder, holder_token) SELECT UNHEX(?), LAST_INSERT_ID(1), ?, 1 ${locked} ${bump}${label}`,
    ];
    this.#bump = [
      `${into}) VALUES (UNHEX(?), LAST_INSERT_ID(1)) ${bump}`,
      `${into}, holder, holder_token) VALUES (UNHEX(?), LAST_INSERT_ID(1), ?, 1) ${bump}${label}`,
    ];
    this.#inspect =
      "SELECT IS_USED_LOCK(?) AS id, t.token, IF(t.holder_token = t.token, t.holder, NULL) AS holder " +
      `FROM (SELECT 1) AS one LEFT JOIN ${options.table} AS t ON t.k = UNHEX(?)`;
    this.capabilities = Object.freeze({
      scope: "cluster",
      ttl: false,
      fencing: true,
      // Named locks are exclusive only: no honest readers/writer or slots without a second protocol.
      shared: false,
      semaphore: false,
      // The server wakes a waiter in GET_LOCK at the release, in no promised order.
      fair: false,
      notify: options.uri !== undefined && options.maxConnections > 1,
    });
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
      const token = await this.#attempt(session, request, false);
      if (token !== undefined && session.dead) {
        throw new Error("the connection to MySQL was lost right after the grant");
      }
      // Not granted, or released at once by a forceRelease on this session (it dropped the name).
      if (token === undefined || !session.names.has(name)) {
        session.names.delete(name);
        return NOT_GRANTED;
      }
      const hold: Hold = { session, name };
      session.names.set(name, hold);
      session.watch();
      return { granted: true, fencingToken: token, hold };
    } catch (error) {
      session.names.delete(name);
      throw error;
    }
  }

  /**
   * Waits in the server: `GET_LOCK(name, 30)` (again while it times out) on
   * a connection of its own, which then holds the lock; a release hands it
   * over at once (polling takes up to 100 ms). Declines (the core polls)
   * with a pool or a given connection. When maxConnections are open, a wait
   * lines up in the client behind this client's connections that wait for
   * (or hold) the same name, at no cost to the server, and takes over the
   * connection of the next of them to end; it declines when there is none.
   * An abort KILLs the wait's connection, which frees whatever it got:
   * nothing is left behind, whichever of the grant and the kill came first.
   */
  async acquire(request: LockRequest, { signal }: WaitOptions): Promise<Grant<Hold> | undefined> {
    const { uri, maxConnections } = this.#options;
    if (uri === undefined || this.#ending()) return undefined;
    const name = lockName(request);
    let session: Session | undefined;
    if (this.#lines.crowded(name) || this.#waiters.size + 1 >= maxConnections) {
      session = await this.#lines.behind(name, signal);
      if (session === undefined) return undefined;
    }
    const stop = onAbort(signal, () => void this.#kill(session));
    try {
      const spare = this.#spare;
      if (session !== undefined) {
        // Handed over by the wait before it in line: one of #waiters already.
      } else if (spare !== undefined && !spare.dead) {
        this.#spare = undefined;
        session = spare;
        this.#waiters.add(spare);
        this.#lines.enter(name);
      } else {
        // Known before it connects: an abort or close() tears it down while it connects.
        await Session.open(this.#options, this.#onDeath, (opened) => {
          session = opened;
          // Asked for from now on: later waits for the name line up behind this one meanwhile.
          opened.names.set(name, undefined);
          this.#waiters.add(opened);
          this.#lines.enter(name);
          this.#sessions.add(opened);
        });
      }
      if (session === undefined) throw new Error("no connection was opened");
      signal.throwIfAborted();
      session.names.set(name, undefined);
      for (;;) {
        const rows = await session.query<{ got: unknown }[]>(
          "SELECT GET_LOCK(?, ?) AS got",
          [name, WAIT_S],
          false,
        );
        signal.throwIfAborted();
        if (Number(rows[0]?.got) === 1) break;
      }
      const token = await this.#attempt(session, request, true);
      if (token === undefined || session.dead) throw new Error("the connection to MySQL was lost");
      const hold: Hold = { session, name };
      session.names.set(name, hold);
      session.watch();
      return { granted: true, fencingToken: token, hold };
    } catch (error) {
      if (session !== undefined) {
        this.#waiters.delete(session);
        this.#sessions.delete(session);
        // Counted in the name's line since it was opened, taken as the spare, or handed over.
        this.#lines.leave(name, undefined);
      }
      void (signal.aborted ? this.#kill(session) : session?.close());
      throw signal.aborted ? signal.reason : error;
    } finally {
      stop();
    }
  }

  /** Named locks have no TTL: a lock is held as long as its session lives and holds it. */
  async extend(_request: LockRequest, hold: Hold): Promise<boolean> {
    const { session, name } = hold;
    if (session.dead || session.names.get(name) !== hold) return false;
    try {
      const { id, me } = await this.#holderOf(session, name);
      return id === me && session.names.get(name) === hold;
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
    // Known now: a death during the release takes the session out of #waiters.
    const waiter = this.#waiters.has(session);
    // Sent before any later attempt on this session: one connection runs its statements in order.
    await session
      .query("DO RELEASE_LOCK(?)", [name])
      .catch((error: unknown) => session.fail(error));
    // A wait's connection held only this lock: to the next wait lined up for it, kept for the next
    // wait, or closed.
    if (!waiter) return;
    if (this.#lines.leave(name, session)) {
      // Asked for at once on its behalf.
      session.names.set(name, undefined);
      return;
    }
    if (!this.#waiters.delete(session)) return;
    const room = this.#waiters.size + 2 <= this.#options.maxConnections;
    if (this.#spare === undefined && room && !session.dead && !this.#ending()) {
      this.#spare = session;
      return;
    }
    this.#sessions.delete(session);
    await session.close();
  }

  /** Who holds a key: `IS_USED_LOCK`, with the token and label of the last grant from the fencing table. */
  async inspect(key: KeyRef): Promise<KeyStatus> {
    const name = lockName(key);
    const session = await this.#live();
    type Row = { id: unknown; token: unknown; holder: Buffer | null };
    const [row] = await this.#withTable(session, () =>
      session.query<Row[]>(this.#inspect, [name, name]),
    );
    if (row === undefined || row.id === null) return { holders: [] };
    const holder = row.holder?.toString("utf8");
    const fencingToken = BigInt(String(row.token ?? 0));
    return {
      limit: 1,
      holders: [{ holder, mode: "exclusive", fencingToken, expiresInMs: undefined }],
    };
  }

  /**
   * Frees a key whoever holds it. Only its session can release a named lock:
   * the holder's session is ended (`KILL CONNECTION`), which frees every lock
   * it held, and its client sees the connection die. The key's row keeps its
   * token, so the next grant's is higher.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    const name = lockName(key);
    const session = await this.#live();
    const { id, me } = await this.#holderOf(session, name);
    if (id === undefined) return false;
    // Held or being taken on this session (checked as KILL is queued behind it): KILL would end ours.
    if (id === me || session.names.has(name)) {
      const hold = session.names.get(name);
      session.names.delete(name);
      session.watch();
      await session.query("DO RELEASE_LOCK(?)", [name]);
      if (hold !== undefined) this.#host?.lost(hold, EVICTED);
      return true;
    }
    // Whoever holds it when the statement runs; a holder gone meanwhile is no error.
    await session.query("KILL CONNECTION IS_USED_LOCK(?)", [name]).catch((error: unknown) => {
      if (errno(error) !== NO_SUCH_THREAD) throw this.#explain(error);
    });
    // KILL returns before the session has ended and freed its locks.
    const closing = this.#host?.closing ?? new AbortController().signal;
    for (let ms = 1; (await this.#holderOf(session, name)).id === id; ms *= 2) {
      if (ms > 1_024) throw new Error(`session ${id} still holds the lock 2 s after its KILL`);
      await sleep(ms, closing);
    }
    return true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    // A given connection, or one of a pool; ours, connecting or not, are in #sessions.
    const session = this.#session;
    const sessions = [...this.#sessions];
    this.#session = undefined;
    this.#waiters.clear();
    this.#sessions.clear();
    this.#spare = undefined;
    await Promise.allSettled([session, ...sessions].map((s) => s?.close()));
  }

  /**
   * Ends a wait's connection from the session (`KILL`, which frees any lock
   * it got), then tears its socket down (at once when the server does not
   * answer within KILL_GRACE_MS).
   */
  async #kill(session: Session | undefined): Promise<void> {
    if (session === undefined || session.dead) return;
    const main = this.#session;
    if (main !== undefined && !main.dead) {
      // A thread id from the driver (an integer): KILL takes no parameter.
      await settledWithin(main.query(`KILL ${Number(session.conn.threadId)}`), KILL_GRACE_MS);
    }
    session.fail(new Error("the wait was given up"));
  }

  /** The id of the session holding `name` (undefined when free), and of `session` (`me`). */
  async #holderOf(session: Session, name: string): Promise<{ id?: number; me: number }> {
    type Row = { id: unknown; me: unknown };
    const sql = "SELECT IS_USED_LOCK(?) AS id, CONNECTION_ID() AS me";
    const [row] = await session.query<Row[]>(sql, [name]);
    return { ...(row?.id == null ? {} : { id: Number(row.id) }), me: Number(row?.me) };
  }

  /**
   * One attempt (`locked`: the lock is already taken, by a wait); the new
   * token, or undefined when another session holds the name.
   */
  async #attempt(
    session: Session,
    request: LockRequest,
    locked: boolean,
  ): Promise<bigint | undefined> {
    type Ok = { affectedRows: number; insertId: number | string };
    const name = lockName(request);
    const label = request.holder === undefined ? undefined : Buffer.from(request.holder, "utf8");
    const sql = (locked ? this.#bump : this.#take)[label === undefined ? 0 : 1];
    // In the order of the placeholders: k (, holder) (, GET_LOCK's name) (, holder's update).
    const values: unknown[] = label === undefined ? [name] : [name, label];
    if (!locked) values.push(name);
    if (label !== undefined) values.push(label);
    const result = await this.#withTable(session, () => session.query<Ok>(sql, values));
    return result.affectedRows === 0 ? undefined : BigInt(String(result.insertId));
  }

  /** Runs `statement`; when the fencing table is missing, or is 0.1's (no label), creates or alters it once and runs it again. */
  async #withTable<T>(session: Session, statement: () => Promise<T>): Promise<T> {
    const explain = (error: unknown): never => {
      throw this.#explain(error);
    };
    return statement().catch(async (error: unknown) => {
      const code = errno(error);
      if (code !== NO_SUCH_TABLE && code !== NO_SUCH_COLUMN) explain(error);
      const { table } = this.#options;
      const sql =
        code === NO_SUCH_TABLE
          ? `CREATE TABLE IF NOT EXISTS ${table} ${COLUMNS}`
          : `ALTER TABLE ${table} ${LABEL_COLUMNS}`;
      // Another client may have added the columns first.
      await session.query(sql).catch((e: unknown) => errno(e) === DUPLICATE_COLUMN || explain(e));
      return statement().catch(explain);
    });
  }

  /** A privilege error, in words that say what to grant. */
  #explain(error: unknown): unknown {
    const code = errno(error);
    const { table } = this.#options;
    const advice =
      code === KILL_DENIED
        ? "forceRelease ends the session holding the lock (KILL CONNECTION), which this user may " +
          "not. GRANT CONNECTION_ADMIN (MySQL 8), CONNECTION ADMIN (MariaDB 10.5+) or SUPER to it"
        : code !== undefined && DENIED.has(code)
          ? `the fencing table ${table} cannot be created, altered or written. Create it once as an ` +
            `administrator: CREATE TABLE ${table} ${COLUMNS} (a table of @locks/mysql 0.1: ALTER ` +
            `TABLE ${table} ${LABEL_COLUMNS}), and GRANT SELECT, INSERT, UPDATE ON it to this user`
          : undefined;
    if (advice === undefined) return error;
    return backendUnavailable(
      NAME,
      new Error(`${advice} (${(error as Error).message})`, { cause: error }),
    );
  }

  /** The session, (re)connected when needed; a given connection only once. */
  #live(): Promise<Session> {
    const session = this.#session;
    if (session !== undefined && !session.dead) return Promise.resolve(session);
    return this.#connectOnce();
  }

  readonly #onDeath = (session: Session, holds: readonly Hold[], cause: unknown): void => {
    this.#sessions.delete(session);
    // A wait connection's hold counted in its name's line.
    const waiter = this.#waiters.delete(session);
    if (this.#spare === session) this.#spare = undefined;
    for (const hold of holds) {
      if (waiter) this.#lines.leave(hold.name, undefined);
      this.#host?.lost(hold, "the MySQL session ended", cause);
    }
  };

  /** The client is closing or closed: no connection is opened. */
  #ending(): boolean {
    return this.#closed || this.#host?.closing.aborted === true;
  }

  async #connect(): Promise<Session> {
    if (this.#ending()) throw lockClosed("mysql backend");
    if (this.#options.connection !== undefined) {
      if (this.#adopted) throw new Error("the connection given to mysqlBackend was lost");
      this.#adopted = true;
    }
    const session = await Session.open(this.#options, this.#onDeath, (s) => this.#sessions.add(s));
    if (this.#closed) {
      await session.close();
      throw lockClosed("mysql backend");
    }
    this.#session = session;
    return session;
  }
}
