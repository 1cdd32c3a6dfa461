import { Liveness, settledWithin } from "@locks/core/backend";
import mysql from "mysql2";
import type { Connection, PoolConnection } from "mysql2/promise";
import type { ResolvedOptions } from "./options.js";

/** How long a connection of ours may take to say goodbye before its socket is torn down. */
const CLOSE_GRACE_MS = 200;

/** A named lock held on a session: what a grant hands the core as its `hold`, and gets back. */
export interface Hold {
  readonly session: Session;
  /** The lock's name on the server: the key digest in hex (64 characters, MySQL's limit). */
  readonly name: string;
}

/** What the backend learns when a session dies: the holds that died with it. */
export type DeathListener = (session: Session, holds: readonly Hold[], cause: unknown) => void;

/** The underlying callback connection of a promise connection, with the events it emits. */
interface Events {
  on(event: string, listener: (arg?: unknown) => void): unknown;
  off(event: string, listener: (arg?: unknown) => void): unknown;
  once(event: string, listener: (arg?: unknown) => void): unknown;
  /**
   * The socket. mysql2's own destroy() only half-closes it (and marks the
   * connection closing): through a partition, queries in flight would never
   * settle. Destroying the socket fails them at once.
   */
  stream: { destroy(): void };
}

/**
 * One MySQL session, which holds every lock taken through it (named locks
 * belong to the session and vanish with it). A session never conflicts with
 * itself (`GET_LOCK` of a name it holds succeeds again, counted), so it
 * keeps the names it holds or asks for, and refuses a second attempt locally.
 */
export class Session {
  dead = false;
  /** Names held (with their hold) or being asked for (undefined). */
  readonly names = new Map<string, Hold | undefined>();
  #liveness: Liveness | undefined;
  /** Statements in flight that the heartbeat watches. */
  #busy = 0;
  readonly #events: Events;
  readonly #fail = (cause?: unknown): void => this.fail(cause ?? new Error("connection closed"));

  private constructor(
    readonly conn: Connection | PoolConnection,
    /** "own": opened by us; "pooled": taken from the user's pool; "given": the user's. */
    readonly origin: "own" | "pooled" | "given",
    readonly options: ResolvedOptions,
    readonly onDeath: DeathListener,
  ) {
    this.#events = (conn as unknown as { connection: Events }).connection;
    this.#events.on("error", this.#fail);
    this.#events.on("end", this.#fail);
  }

  /**
   * The session for `options`: a connection of ours, one taken from the
   * pool, or the one given. `opened` sees a connection of ours before it is
   * connected, so that close() can tear it down while it connects.
   */
  static async open(
    options: ResolvedOptions,
    onDeath: DeathListener,
    opened: (session: Session) => void,
  ): Promise<Session> {
    const { uri, pool, connection } = options;
    if (connection !== undefined) return new Session(connection, "given", options, onDeath);
    if (pool !== undefined) {
      return new Session(await pool.getConnection(), "pooled", options, onDeath);
    }
    const core = mysql.createConnection({
      ...(uri !== undefined ? { uri } : {}),
      connectTimeout: options.connectTimeoutMs,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    const session = new Session(core.promise(), "own", options, onDeath);
    opened(session);
    await new Promise((resolve, reject) => {
      session.#events.once("connect", resolve);
      session.#events.once("error", reject);
      session.#events.once("end", () => reject(new Error("the connection to MySQL was closed")));
    });
    return session;
  }

  /** Runs a statement; the rows (or the OK packet) as mysql2 returns them. */
  /**
   * Runs a statement; the rows (or the OK packet) as mysql2 returns them.
   * While it runs the session is watched (heartbeatMs), unless `watched` is
   * false (a wait in GET_LOCK: a beat would queue behind it): through a
   * partition, it would otherwise never settle.
   */
  async query<T>(sql: string, values: unknown[] = [], watched = true): Promise<T> {
    if (this.dead) throw new Error("the connection to MySQL was lost");
    if (watched) this.#watch(1);
    try {
      const [result] = await this.conn.query(sql, values);
      return result as T;
    } finally {
      if (watched) this.#watch(-1);
    }
  }

  /** The holds on this session. */
  holds(): Hold[] {
    return [...this.names.values()].filter((hold) => hold !== undefined);
  }

  /** Keeps a session proven alive (heartbeatMs) while it holds locks or runs a statement. */
  watch(): void {
    this.#watch(0);
  }

  #watch(busy: number): void {
    this.#busy += busy;
    const every = this.options.heartbeatMs;
    if (every === 0 || this.dead || (this.#busy === 0 && this.holds().length === 0)) {
      this.#liveness?.stop();
      this.#liveness = undefined;
    } else if (this.#liveness === undefined) {
      this.#liveness = new Liveness({
        intervalMs: every,
        // Unanswered for two intervals: the session is presumed dead, and its leases lost.
        validForMs: 2 * every,
        beat: () => this.query("SELECT 1", [], false).then(() => undefined),
        lost: (cause) =>
          this.fail(new Error(`no answer to a heartbeat within ${2 * every} ms`, { cause })),
      });
    }
  }

  /** Marks the session dead (once), tears down a connection not given, and reports its holds lost. */
  fail(cause: unknown): void {
    if (this.dead) return;
    this.dead = true;
    const holds = this.holds();
    this.names.clear();
    this.#liveness?.stop();
    if (this.origin === "given") this.#detach();
    else this.#events.stream.destroy();
    this.onDeath(this, holds, cause);
  }

  /**
   * Closes a connection of ours, gives a pooled one back (torn down instead
   * when locks are still on it: the next borrower would hold them), and only
   * stops listening to a given one.
   */
  async close(): Promise<void> {
    const dead = this.dead;
    this.dead = true;
    this.#liveness?.stop();
    if (this.origin === "given" || (this.origin === "pooled" && !dead && this.names.size === 0)) {
      this.#detach();
      if (this.origin === "pooled") (this.conn as PoolConnection).release();
      return;
    }
    // Errors after this point are expected (the socket goes away); the listeners stay, so none is unhandled.
    if (!dead) await settledWithin(this.conn.end(), CLOSE_GRACE_MS);
    this.#events.stream.destroy();
  }

  #detach(): void {
    this.#liveness?.stop();
    this.#liveness = undefined;
    this.#events.off("error", this.#fail);
    this.#events.off("end", this.#fail);
  }
}
