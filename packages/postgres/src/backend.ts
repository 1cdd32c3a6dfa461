import {
  type Attempt,
  type Backend,
  type BackendHost,
  type Capabilities,
  type Grant,
  type HolderStatus,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  Liveness,
  type LockRequest,
  limitMismatch,
  lockClosed,
  onAbort,
  QueueLines,
  settledWithin,
  singleFlight,
  type Unsubscribe,
  type WaitOptions,
  WakeRegistry,
} from "@locks/core/backend";
import { Connection, type Hold, poolerError, type Row, sqlState } from "./connection.js";
import { idHalves, idsOf, limitMarkers, slotCandidates, turnId } from "./keys.js";
import type { ResolvedOptions } from "./options.js";
import { holds, type QueueHost, retried, waitInQueue } from "./queue.js";
import * as sql from "./sql.js";

const NAME = "postgres";

/** How a wait on a queue connection ended: "again" when the connection died, and the wait moves to another. */
type Waited = Grant<Hold> | undefined | "again";
const NOT_GRANTED: Attempt<Hold> = Object.freeze({ granted: false });

/** How long forceRelease waits for each session it terminates to end. */
const TERMINATE_WAIT_MS = 5_000;

/** How long a wait may wait for the spare connection being opened before it opens its own. */
const SPARE_WAIT_MS = 250;

/** How long close() waits for a given client's UNLISTEN. */
const UNLISTEN_GRACE_MS = 200;

/** A releaser holds the interest marker for one statement: a poller that finds it taken retries this often. */
const INTEREST_ATTEMPTS = 50;

/** A semaphore's turn holder attempts for a slot this often while notifications are healthy (a missed one). */
const TURN_SAFETY_POLL_MS = 5_000;
/** ...and this often while they may be missed (the listening session was lost). */
const TURN_UNSURE_POLL_MS = 500;
/**
 * ...and this soon when other slot attempts were in flight on the session:
 * it could not ask for their slots (a session never conflicts with itself),
 * and their refusals wake nobody.
 */
const TURN_ASKED_MS = 5;

/** Watches a key's changes through its interest marker (see `subscribe`). */
interface Watch {
  /** A NOTIFY, or this backend's own release. */
  wake(): void;
  /** The session holding the marker (and listening) ended. */
  lost(): void;
  /** A new session is up: announce the watch on it again. */
  up(session: Connection): void;
}

/**
 * PostgreSQL session-level advisory locks.
 *
 * Connections: one session connection takes every non-blocking attempt and
 * holds what they grant; a wait queues in the server on a queue connection
 * of its own (opened on demand, up to maxConnections in all, kept for reuse
 * while idle), which then holds the lock it waited for until the release.
 * Each grant's hold names the connection its lock lives on.
 */
export class PostgresBackend implements Backend<Hold> {
  readonly name = NAME;
  readonly capabilities: Capabilities;

  readonly #options: ResolvedOptions;
  /** The statements of this backend's holders table. */
  readonly #sql: sql.Statements;
  /** Watches by interest marker: woken by NOTIFY, and by this backend's own releases. */
  readonly #wakes = new WakeRegistry<Watch>();
  /** Every watch: told when the session is lost, and when a new one is up. */
  readonly #watches = new Set<Watch>();
  /** This client's waits in the server's queue by key, and the waits lined up behind them. */
  readonly #lines = new QueueLines<Connection>(
    (conn) => !conn.dead && !conn.waiting && conn.holds.size === 0,
  );
  /** The semaphore turns this client holds: attempts without the turn would be refused. */
  readonly #turnsHeld = new Set<string>();
  /** Every connection of ours, open or being opened, the session included. */
  readonly #conns = new Set<Connection>();
  readonly #idle: Connection[] = [];
  /** Queue connections open or being opened. */
  #queueCount = 0;
  #session: Connection | undefined;
  /** One connect at a time, shared by every caller that needs the session meanwhile. */
  readonly #connectOnce = singleFlight(() => this.#connectSession());
  /** The spare queue connection being opened. */
  #warming: Promise<void> | undefined;
  /** A given client was adopted once; it cannot be replaced when it dies. */
  #adopted = false;
  #host: BackendHost<Hold> | undefined;
  /** No connection is opened once close() was called. */
  #closed = false;
  readonly #queue: QueueHost;

  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#sql = sql.statements(options.table, options.sequence, options.channel);
    const { sequence } = options;
    this.#queue = { sequence, sql: this.#sql, cancel: (conn) => this.#cancel(conn) };
    this.capabilities = Object.freeze({
      scope: "cluster",
      ttl: false,
      fencing: true,
      shared: true,
      semaphore: true,
      // The server's lock queue is FIFO; polling (a given client, maxConnections 1) is not.
      fair: options.maxConnections > 1,
      notify: true,
    });
    if (options.client === undefined) {
      // Connect in the background right away, the session and the spare at once
      // (errors surface on the first call).
      this.#liveSession().catch(() => undefined);
      this.#warmSpare();
    }
  }

  bind(host: BackendHost<Hold>): void {
    this.#host = host;
  }

  tryAcquire(request: LockRequest): Promise<Attempt<Hold>> {
    const live = this.#session;
    // The hot path stays free of extra awaits: an uncontended cycle is two round trips and little else.
    if (live !== undefined && !live.dead) return this.#attempt(live, request);
    return this.#liveSession().then((session) => this.#attempt(session, request));
  }

  /**
   * Waits in the server's lock queue on a queue connection of its own (FIFO),
   * which then holds the lock; declines (the core polls) when no queue
   * connection is free, or a given client is the only connection.
   *
   * When no queue connection is free, a wait lines up in the client behind
   * its waits of the same key already in the server's queue (QueueLines),
   * and joins the queue on the connection the next of them frees; it
   * declines only when the client has none there.
   *
   * A semaphore waiter cannot queue for "any of N slots": it queues for the
   * semaphore's turn, and then, still in this call, takes the next slot
   * freed (attempts without the turn leave freed slots to it, see
   * sql.TRY_SLOTS), woken by the key's notifications. It hands the turn to
   * the next waiter once it has a slot or gives up.
   *
   * A wait whose signal aborted rejects once it left the server's queue
   * (nothing is left behind: a round trip for the cancel, at most about a
   * second when the server does not answer, then its connection is torn
   * down); one ended by close() goes with its connection.
   */
  acquire(request: LockRequest, { signal }: WaitOptions): Promise<Grant<Hold> | undefined> {
    return this.#wait(request, signal);
  }

  async extend(_request: LockRequest, hold: Hold): Promise<boolean> {
    const { conn } = hold;
    if (!conn.holds.has(hold)) return false;
    try {
      return (await retried(conn, () => holds(conn, hold.id, hold.mode))) && conn.holds.has(hold);
    } catch (error) {
      if (conn.dead) return false;
      throw error;
    }
  }

  /**
   * With `hold` undefined (an attempt failed) there is nothing to release:
   * its statement failed as a whole, or its session died, and the lock with it.
   */
  release(_request: LockRequest, hold: Hold | undefined): Promise<void> {
    return hold === undefined ? Promise.resolve() : this.#unlock(hold);
  }

  /** Releases the lock behind `hold`, unless it was released (or lost) already. */
  #unlock(hold: Hold): Promise<void> {
    if (!this.#forgetHold(hold)) return Promise.resolve();
    const { conn, markers, noted } = hold;
    const low = Number(BigInt.asIntN(32, hold.token));
    const values = [hold.id, hold.interest, hold.key, low];
    if (markers !== undefined) values.push(...markers);
    if (noted) values.push(String(hold.token));
    const grants = noted ? this.#sql.noted : this.#sql.plain;
    const statement = markers === undefined ? grants.RELEASE[hold.mode] : grants.RELEASE_SLOT;
    const done = (): void => {
      conn.unhold(hold.id);
      if (markers !== undefined) conn.unhold(markers[0]);
      this.#wakes.wake(hold.interest);
      if (conn === this.#session) return;
      if (markers === undefined) this.#leaveLine(hold.key, conn);
      else this.#recycle(conn);
    };
    // Again when a late cancel (only ever sent to a queue connection) interrupted it, as any
    // clean-up. Any other failure leaves an unknown state: end the session, which frees every lock
    // it holds (the others are reported lost).
    const unlocked = conn.queue
      ? retried(conn, () => conn.query(statement, values))
      : conn.query(statement, values);
    return unlocked.then(done, (error: unknown) => {
      conn.fail(error);
      done();
    });
  }

  /**
   * Tells the core when `key` may have become free, through LISTEN/NOTIFY.
   * The watch takes the key's interest marker in shared mode on the session;
   * a release tries to take the marker exclusively in the same statement as
   * its unlock, and NOTIFYs only when that fails and the key is free after
   * the unlock (see sql.RELEASE): notifications cost nothing when nobody
   * watches, none is sent when the server's queue took the key anyway, and a
   * release after this resolved is never missed. A session never conflicts
   * with itself, so this backend's own releases wake its watches directly.
   * When the session ends, the watch reports "unsure" (notifications may be
   * missed), and "changed" once it is announced on the next session.
   */
  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    return this.#watch(key, onChange);
  }

  async #watch(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    const { interest } = idsOf(key);
    /** The session the marker is held on. */
    let on: Connection | undefined;
    let announcing = false;
    let ended = false;
    /** Announces the watch on `next` (the session, or its connect). */
    const announce = async (next: Connection | Promise<Connection>): Promise<boolean> => {
      announcing = true;
      try {
        const session = await next;
        await this.#listen(session);
        const taken = await takeInterest(session, interest);
        if (taken && ended) void dropInterest(session, interest);
        else if (taken && !session.dead) on = session;
        return on === session;
      } finally {
        announcing = false;
      }
    };
    const watch: Watch = {
      wake: () => onChange(),
      lost: () => {
        on = undefined;
        onChange("unsure");
      },
      up: (session) => {
        if (on !== undefined || announcing || ended) return;
        announce(session).then((announced) => announced && !ended && onChange("changed"), noop);
      },
    };
    this.#watches.add(watch);
    const remove = this.#wakes.add(interest, watch);
    // Nothing to await: a server that stopped answering must not hold up the end of a wait.
    const stop = (): void => {
      ended = true;
      remove();
      this.#watches.delete(watch);
      if (on !== undefined && !on.dead) void dropInterest(on, interest);
      on = undefined;
    };
    try {
      // Not announced (a releaser held the marker throughout): the core polls meanwhile.
      if (!(await announce(this.#liveSession()))) onChange("unsure");
    } catch (error) {
      stop();
      throw error;
    }
    return stop;
  }

  /**
   * Who holds a key, from pg_locks: each grant's token marker on a session
   * that holds the key (or a slot of it), and the labels of labelled grants
   * from the holders table (a row whose token is not live is ignored).
   */
  async inspect(key: KeyRef): Promise<KeyStatus> {
    const session = await this.#liveSession();
    const ids = idsOf(key);
    const k = idHalves(ids.key);
    const p = idHalves(ids.presence);
    const { sequence } = this.#options;
    const [rows, labels] = await Promise.all([
      session.query(this.#sql.HOLDERS, [
        k.classid,
        k.objid,
        p.classid,
        p.objid,
        ...ids.markerHalves,
        sequence,
      ]),
      session.query(this.#sql.LABELS, [ids.key]),
    ]);
    const labelOf = new Map(labels.map((row) => [String(row.token), label(row.holder)]));
    const holders = rows.map((row): HolderStatus => {
      const fencingToken = tokenOf(BigInt(String(row.low)), BigInt(String(row.last)));
      return {
        holder: labelOf.get(String(fencingToken)),
        mode: row.slot !== true && row.mode === "ShareLock" ? "shared" : "exclusive",
        fencingToken,
        expiresInMs: undefined,
      };
    });
    const slots = rows.some((row) => row.slot === true);
    const limit = slots ? Number(rows[0]?.lim) : 1;
    return holders.length === 0 ? { holders } : { holders, limit };
  }

  /**
   * Frees `key` by ending every other session that holds it
   * (`pg_terminate_backend`, which needs the privilege to signal them): an
   * advisory lock can only be released by its session, so every other lock
   * on those sessions is lost too. Their clients see the connection die and
   * report their leases lost. This client's own holds of the key are
   * released and reported lost instead, its sessions kept. Waiters in the
   * server's queue are granted as the sessions end; pollers are notified.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    const ids = idsOf(key);
    const session = await this.#liveSession();
    // The session is one of #conns, unless it is a given client.
    const conns = [...new Set([...this.#conns, session])].filter((conn) => !conn.dead);
    const mine = conns.flatMap((conn) =>
      [...conn.holds].filter((h) => h.id === ids.key || h.markers?.[0] === ids.presence),
    );
    const k = idHalves(ids.key);
    const p = idHalves(ids.presence);
    const pids = conns.map((conn) => conn.pid);
    const values = [k.classid, k.objid, p.classid, p.objid, pids, TERMINATE_WAIT_MS];
    values.push(this.#options.channel, ids.interest);
    const [row] = await session.query(this.#sql.FORCE_RELEASE, values).catch((error: unknown) => {
      if (sqlState(error) !== "42501") throw error;
      throw new Error(
        "forceRelease ends the sessions holding the key (pg_terminate_backend), which takes a " +
          "superuser, a member of pg_signal_backend, or the role of those sessions",
        { cause: error },
      );
    });
    if (Number(row?.alive) > 0) {
      throw new Error(`a session holding the key did not end within ${TERMINATE_WAIT_MS} ms`);
    }
    await Promise.all(
      mine.map((hold) => {
        // Unlocked first: the core's own release of a lost lease then finds nothing left to do.
        const unlocked = this.#unlock(hold);
        this.#host?.lost(hold, "the key was force-released");
        return unlocked;
      }),
    );
    return Number(row?.ended) > 0 || mine.length > 0;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const given = this.#options.client !== undefined ? this.#session : undefined;
    if (given !== undefined) {
      if (!given.dead && given.listening) {
        const unlisten = given.query(`UNLISTEN "${this.#options.channel}"`);
        await settledWithin(unlisten, UNLISTEN_GRACE_MS);
      }
      given.detach();
    }
    this.#idle.length = 0;
    await Promise.allSettled([...this.#conns].map((conn) => conn.close()));
    this.#conns.clear();
  }

  // --- attempts -------------------------------------------------------------

  /**
   * One non-blocking attempt on `conn`, which then holds the grant. A session
   * never conflicts with itself, so what this session holds (or is asking
   * for) exclusively, or a writer's request for what it reads, is refused
   * here, without asking. A second reader of a key the session reads takes
   * it once more on the same session (PostgreSQL counts it), unless a writer
   * waits in the server's queue: the server would let the session's own
   * reader jump that queue, so the statement refuses it then, as the server
   * refuses a reader of another session.
   */
  #attempt(conn: Connection, request: LockRequest): Promise<Attempt<Hold>> {
    const ids = idsOf(request);
    if (request.limit > 1) return this.#attemptSlots(conn, request, false);
    const semaphore = conn.ids.get(ids.presence);
    if (semaphore !== undefined) return Promise.reject(limitMismatch(1, semaphore.limit));
    const held = conn.ids.get(ids.key);
    if (held !== undefined && (held.mode === "exclusive" || request.mode === "exclusive")) {
      return Promise.resolve(NOT_GRANTED);
    }
    conn.hold(ids.key, request.mode);
    const { holder } = request;
    const values: unknown[] = [ids.key, ids.presence];
    if (held !== undefined) {
      const { classid, objid } = idHalves(ids.key);
      values.push(classid, objid);
    }
    if (holder !== undefined) values.push(Buffer.from(holder));
    const grants = holder === undefined ? this.#sql.plain : this.#sql.noted;
    const statement = held === undefined ? grants.TRY[request.mode] : grants.TRY_READ_AGAIN;
    return conn.query(statement, values).then(
      (rows) => {
        const row = rows[0];
        if (row?.token === null || row?.token === undefined) {
          conn.unhold(ids.key);
          return NOT_GRANTED;
        }
        const token = BigInt(String(row.token));
        if (token === 0n) {
          // Semaphore holders hold the key: the statement gave the lock back.
          conn.unhold(ids.key);
          return this.#refuseMismatch(conn, request);
        }
        return this.#granted(conn, request, ids.key, undefined, row);
      },
      (error: unknown) => {
        conn.unhold(ids.key);
        throw this.#attemptFailed(conn, holder, error);
      },
    );
  }

  /**
   * Refuses a limit-1 request of a key its statement found held as a
   * semaphore: with the limit they use, or as taken when they are gone already.
   */
  async #refuseMismatch(conn: Connection, request: LockRequest): Promise<Attempt<Hold>> {
    const [row] = await conn.query(sql.SEMAPHORE_LIMIT, [...idsOf(request).markerHalves]);
    if (row?.lim !== null && row?.lim !== undefined) throw limitMismatch(1, Number(row.lim));
    return NOT_GRANTED;
  }

  /** A semaphore attempt; `turn`: by the holder of the semaphore's turn (see `acquire`). */
  async #attemptSlots(
    conn: Connection,
    request: LockRequest,
    turn: boolean,
  ): Promise<Attempt<Hold>> {
    // The server would refuse it: another session of this client holds the turn.
    if (!turn && this.#turnsHeld.size > 0 && this.#turnsHeld.has(turnId(request)))
      return NOT_GRANTED;
    const ids = idsOf(request);
    const candidates = slotCandidates(request).filter((id) => !conn.ids.has(id));
    if (candidates.length === 0) return NOT_GRANTED;
    const [a, b, marked] = limitMarkers(ids, request.limit);
    const { classid, objid } = idHalves(ids.key);
    // The turn's holder is the waiter a freed slot is for; NULLs skip the check for it.
    const other = turn ? { classid: null, objid: null } : idHalves(turnId(request));
    for (const id of candidates) conn.hold(id, "exclusive");
    conn.hold(ids.presence, "shared", request.limit);
    conn.askingSlots++;
    const { holder } = request;
    let row: Row | undefined;
    try {
      const grants = holder === undefined ? this.#sql.plain : this.#sql.noted;
      const noted = holder === undefined ? [] : [Buffer.from(holder)];
      [row] = await conn.query(grants.TRY_SLOTS, [
        candidates,
        this.#options.sequence,
        ids.presence,
        a,
        b,
        classid,
        objid,
        ...ids.markerHalves,
        marked,
        other.classid,
        other.objid,
        ids.key,
        ...noted,
      ]);
    } catch (error) {
      for (const id of candidates) conn.unhold(id);
      conn.unhold(ids.presence);
      throw this.#attemptFailed(conn, holder, error);
    } finally {
      conn.askingSlots--;
    }
    const slot = typeof row?.slot === "string" ? row.slot : undefined;
    for (const id of candidates) if (id !== slot) conn.unhold(id);
    if (slot === undefined || row === undefined) {
      conn.unhold(ids.presence);
      const limit = row?.other;
      if (limit !== null && limit !== undefined) throw limitMismatch(request.limit, Number(limit));
      return NOT_GRANTED;
    }
    return this.#granted(conn, request, slot, [ids.presence, a, b], row);
  }

  /**
   * A labelled attempt whose row the server refused while it ran (a token
   * already in the table, after the sequence was reset) took its lock before
   * the error, and a lock is not rolled back: the session is ended, which
   * frees whatever it holds (its other leases are reported lost).
   */
  #attemptFailed(conn: Connection, holder: string | undefined, error: unknown): unknown {
    if (holder !== undefined && sqlState(error) !== undefined) conn.fail(error);
    return error;
  }

  /** The grant of `id` (the key's, or a slot's with its `markers`) to `request`, whose statement answered `row`. */
  #granted(
    conn: Connection,
    request: LockRequest,
    id: string,
    markers: Hold["markers"],
    row: Row,
  ): Grant<Hold> {
    if (Number(row.pid) !== conn.pid || conn.dead) {
      conn.unhold(id);
      if (markers !== undefined) conn.unhold(markers[0]);
      // The session ended right after the grant: the lock went with it.
      if (conn.dead) throw new Error("the connection to PostgreSQL was lost");
      const error = poolerError(conn.pid, Number(row.pid));
      conn.fail(error);
      throw error;
    }
    const token = BigInt(String(row.token));
    return {
      granted: true,
      fencingToken: token,
      hold: this.#hold(conn, request, id, markers, token),
    };
  }

  /** Records a lock held on its connection; with heartbeatMs, the connection is kept proven alive. */
  #hold(
    conn: Connection,
    request: LockRequest,
    id: string,
    markers: Hold["markers"],
    token: bigint,
  ): Hold {
    const { interest, key } = idsOf(request);
    // A semaphore's slot (with markers) is held exclusively, whatever the request's mode.
    const mode = markers === undefined ? request.mode : "exclusive";
    const noted = request.holder !== undefined;
    const hold: Hold = { conn, id, mode, interest, markers, token, key, noted };
    conn.holds.add(hold);
    const every = this.#options.heartbeatMs;
    if (every > 0 && conn.liveness === undefined) {
      conn.liveness = new Liveness({
        intervalMs: every,
        // Unanswered for two intervals: the session is presumed dead, and its leases lost.
        validForMs: 2 * every,
        beat: () => conn.query(sql.HEARTBEAT).then(() => undefined),
        lost: (cause) =>
          conn.fail(new Error(`no answer to a heartbeat within ${2 * every} ms`, { cause })),
      });
    }
    return hold;
  }

  /** Forgets a hold on its connection; false when it was not there (released, or its session died). */
  #forgetHold(hold: Hold): boolean {
    const { conn } = hold;
    if (!conn.holds.delete(hold)) return false;
    if (conn.holds.size === 0) {
      conn.liveness?.stop();
      conn.liveness = undefined;
    }
    return true;
  }

  // --- waiting --------------------------------------------------------------

  async #wait(request: LockRequest, signal: AbortSignal): Promise<Grant<Hold> | undefined> {
    if (request.limit > 1) {
      for (;;) {
        const conn = await this.#queueConnection(signal);
        if (conn === undefined) return undefined;
        const outcome = await this.#waitTurn(conn, request, signal);
        // "again": the connection died while waiting: queue again on another.
        if (outcome !== "again") return outcome;
      }
    }
    const { key } = idsOf(request);
    for (;;) {
      let conn: Connection | undefined;
      // Behind the client's earlier waits of the key while they line up, so that it keeps their order.
      if (!this.#lines.crowded(key)) conn = await this.#queueConnection(signal);
      if (conn !== undefined) this.#lines.enter(key);
      else conn = await this.#lines.behind(key, signal);
      if (conn === undefined) return undefined;
      const outcome = await this.#waitOn(conn, request, signal);
      if (outcome !== "again") return outcome;
    }
  }

  /** Waits for the key on a queue connection (counted in its line), which then holds it. */
  async #waitOn(conn: Connection, request: LockRequest, signal: AbortSignal): Promise<Waited> {
    const ids = idsOf(request);
    conn.hold(ids.key, request.mode);
    const wait = { presence: ids.presence, holder: request.holder };
    const outcome = await waitInQueue(this.#queue, conn, ids.key, request.mode, wait, signal);
    if (outcome.kind === "granted" && !conn.dead) {
      const { token } = outcome;
      const hold = this.#hold(conn, request, ids.key, undefined, token);
      return { granted: true, fencingToken: token, hold };
    }
    conn.unhold(ids.key);
    this.#leaveLine(ids.key, conn);
    signal.throwIfAborted();
    if (outcome.kind === "mismatch") await this.#refuseMismatch(await this.#liveSession(), request);
    if (outcome.kind === "failed" && !conn.dead) throw outcome.error;
    return "again";
  }

  /** A queue connection's wait for `key`, or its hold of it, ended: to the next in line, or recycled. */
  #leaveLine(key: string, conn: Connection): void {
    if (!this.#lines.leave(key, conn)) this.#recycle(conn);
  }

  /** Waits for the semaphore's turn on a queue connection, then for a slot (see `acquire`). */
  async #waitTurn(conn: Connection, request: LockRequest, signal: AbortSignal): Promise<Waited> {
    const id = turnId(request);
    const outcome = await waitInQueue(this.#queue, conn, id, "exclusive", undefined, signal);
    if (outcome.kind !== "granted" || conn.dead) {
      this.#recycle(conn);
      signal.throwIfAborted();
      if (outcome.kind === "failed" && !conn.dead) throw outcome.error;
      return "again";
    }
    // Holding the turn: the connection is not idle until it hands the turn on.
    conn.waiting = true;
    this.#turnsHeld.add(id);
    try {
      return await this.#slotWithTurn(request, signal);
    } finally {
      this.#turnsHeld.delete(id);
      retried(conn, () => conn.query(sql.END_TURN, [id])).then(
        () => {
          conn.waiting = false;
          this.#recycle(conn);
        },
        (error: unknown) => conn.fail(error),
      );
    }
  }

  /**
   * Takes the next slot of the semaphore whose turn this request holds:
   * attempts when the key changes (a release NOTIFYs its watchers), and
   * slowly meanwhile, for a notification missed.
   */
  async #slotWithTurn(request: LockRequest, signal: AbortSignal): Promise<Grant<Hold>> {
    let changed = false;
    let unsure = false;
    let wakeUp: (() => void) | undefined;
    const unwatch = await this.#watch(request, (event) => {
      unsure = event === "unsure";
      changed = true;
      wakeUp?.();
    });
    try {
      for (;;) {
        signal.throwIfAborted();
        changed = false;
        const session = await this.#liveSession();
        const asked = session.askingSlots > 0;
        const attempt = await this.#attemptSlots(session, request, true);
        if (attempt.granted) return attempt;
        if (changed) continue;
        await new Promise<void>((resolve) => {
          const done = (): void => {
            wakeUp = undefined;
            clearTimeout(timer);
            stop();
            resolve();
          };
          const timer = setTimeout(
            done,
            asked ? TURN_ASKED_MS : unsure ? TURN_UNSURE_POLL_MS : TURN_SAFETY_POLL_MS,
          );
          const stop = onAbort(signal, done);
          wakeUp = done;
        });
      }
    } finally {
      await unwatch();
    }
  }

  /**
   * pg_cancel_backend for a waiting queue connection, sent on the session.
   * While closing, only on a live session, and nobody waits for it: close()
   * tears the connection down next, and the cancel (on the wire before the
   * session's goodbye) takes the wait out of the server's queue meanwhile
   * (a server does not notice a client gone while it waits for a lock).
   */
  #cancel(conn: Connection): Promise<unknown> | undefined {
    if (!this.#ending()) {
      return this.#liveSession().then((session) => session.query(sql.CANCEL, [conn.pid]));
    }
    const session = this.#session;
    if (session !== undefined && !session.dead) void dropped(session.query(sql.CANCEL, [conn.pid]));
    return undefined;
  }

  async #listen(session: Connection): Promise<void> {
    if (session.listening) return;
    session.listening = true;
    session.onNotification(this.#options.channel, (payload) => this.#wakes.wake(payload));
    try {
      // An identifier cannot be a parameter: the channel is a validated name from the options.
      await session.query(`LISTEN "${this.#options.channel}"`);
    } catch (error) {
      session.listening = false;
      throw error;
    }
  }

  // --- connections ----------------------------------------------------------

  /** The client is closing or closed: no connection is opened (close() tears down what is left). */
  #ending(): boolean {
    return this.#closed || this.#host?.closing.aborted === true;
  }

  /** The session connection, (re)connected when needed. */
  #liveSession(): Promise<Connection> {
    const session = this.#session;
    if (session !== undefined && !session.dead) return Promise.resolve(session);
    return this.#connectOnce();
  }

  async #connectSession(): Promise<Connection> {
    if (this.#options.client === undefined) {
      const session = await this.#open();
      this.#session = session;
      for (const watch of this.#watches) watch.up(session);
      return session;
    }
    if (this.#adopted) throw new Error("the pg.Client given to the backend lost its connection");
    this.#adopted = true;
    const conn = new Connection(this.#options, this.#sql, this.#onDeath);
    await conn.open();
    this.#session = conn;
    return conn;
  }

  /** Opens a connection of ours; close() closes it even while it opens. */
  async #open(queue = false): Promise<Connection> {
    if (this.#ending()) throw lockClosed("postgres backend");
    const conn = new Connection(this.#options, this.#sql, this.#onDeath, queue);
    this.#conns.add(conn);
    await conn.open();
    return conn;
  }

  /** An idle queue connection, a new one, or undefined when maxConnections are open. */
  async #queueConnection(signal: AbortSignal): Promise<Connection | undefined> {
    for (;;) {
      for (let conn = this.#idle.pop(); conn !== undefined; conn = this.#idle.pop()) {
        clearTimeout(conn.idleTimer);
        if (!conn.dead) {
          this.#warmSpare();
          return conn;
        }
      }
      // A spare on its way is nearer than a new connection, unless it is stuck (a partition
      // swallowed its setup): wait for it a little, then open another.
      if (this.#warming === undefined) break;
      await settledWithin(this.#warming, SPARE_WAIT_MS);
      signal.throwIfAborted();
      if (this.#idle.length === 0) break;
    }
    const conn = await this.#openQueueConnection();
    if (conn !== undefined && signal.aborted) {
      this.#recycle(conn);
      signal.throwIfAborted();
    }
    return conn;
  }

  /** Opens a queue connection, unless maxConnections (the session included) are open. */
  #openQueueConnection(): Promise<Connection | undefined> {
    const { client, maxConnections } = this.#options;
    if (client !== undefined || this.#queueCount + 1 >= maxConnections) {
      return Promise.resolve(undefined);
    }
    // Counted back down when it dies or closes (#forget), failing to open included.
    this.#queueCount++;
    return this.#open(true);
  }

  /**
   * Keeps one idle queue connection ready, so that a wait joins the server's
   * queue at once instead of after a connect (which would also let a later
   * waiter overtake it).
   */
  #warmSpare(): void {
    if (this.#warming !== undefined || this.#idle.length > 0 || this.#ending()) return;
    const spare = this.#openQueueConnection().catch(() => undefined);
    this.#warming = spare.then((conn) => {
      this.#warming = undefined;
      if (conn !== undefined) this.#recycle(conn);
    });
  }

  /**
   * Puts a queue connection that holds nothing back in the idle pool (or
   * closes it). One idle connection is kept as the spare; others close after
   * idleTimeoutMs. While closing, close() closes them all.
   */
  #recycle(conn: Connection): void {
    if (conn.dead || conn === this.#session || conn.holds.size > 0 || conn.waiting) return;
    if (this.#ending() || this.#idle.includes(conn) || this.#lines.handAny(conn)) return;
    this.#idle.push(conn);
    if (this.#idle.length === 1) return;
    conn.idleTimer = setTimeout(() => {
      conn.idleTimer = undefined;
      const index = this.#idle.indexOf(conn);
      if (index < 0 || this.#idle.length === 1) return;
      this.#idle.splice(index, 1);
      // Forgotten once closed, so that close() waits for it meanwhile.
      void conn.close().then(() => this.#forget(conn));
    }, this.#options.idleTimeoutMs);
    conn.idleTimer.unref();
  }

  #forget(conn: Connection): void {
    if (this.#conns.delete(conn) && conn.queue) this.#queueCount--;
  }

  /** A session ended: every lock on it is lost, at once. */
  readonly #onDeath = (conn: Connection, cause: unknown): void => {
    const holds = [...conn.holds];
    conn.holds.clear();
    // A queue connection's hold of a key counted in the key's line.
    if (conn.queue)
      for (const hold of holds)
        if (hold.markers === undefined) this.#lines.leave(hold.key, undefined);
    conn.ids.clear();
    const index = this.#idle.indexOf(conn);
    if (index >= 0) this.#idle.splice(index, 1);
    this.#forget(conn);
    if (conn === this.#session) {
      if (this.#options.client === undefined) this.#session = undefined;
      // Watches announced themselves on that session: notifications may be missed until they
      // do it again on the next one (reconnected at once, or by the next attempt).
      for (const watch of this.#watches) watch.lost();
      if (this.#watches.size > 0 && this.#options.client === undefined && !this.#ending()) {
        this.#liveSession().catch(noop);
      }
    }
    const detail = cause instanceof Error ? `: ${cause.message}` : "";
    const reason = `the PostgreSQL session holding the lock ended${detail}`;
    for (const hold of holds) this.#host?.lost(hold, reason, cause);
  };
}

function noop(): void {}

/** A label as the holders table keeps it (UTF-8 bytes: see sql.statements). */
function label(column: unknown): string {
  return Buffer.isBuffer(column) ? column.toString("utf8") : String(column);
}

/**
 * A token from its marker's low 32 bits and the sequence's last value (read
 * in the same statement, before or after the marker): the token nearest to
 * that value with those low bits. Exact for every grant fewer than 2^31
 * tokens older than the last one drawn.
 */
function tokenOf(low: bigint, last: bigint): bigint {
  return last + BigInt.asIntN(32, low - last);
}

/** Announces a poller of the key whose interest marker is `interest`; false when it could not. */
async function takeInterest(session: Connection, interest: string): Promise<boolean> {
  for (let i = 0; i < INTEREST_ATTEMPTS; i++) {
    const [row] = await session.query(sql.INTEREST, [interest]);
    if (row?.ok === true) return true;
    await new Promise((resolve) => setImmediate(resolve));
  }
  // Not announced: this poller relies on polling alone.
  return false;
}

function dropInterest(session: Connection, interest: string): Promise<unknown> {
  return dropped(session.query(sql.DISINTEREST, [interest]));
}

/** A statement whose outcome nobody waits for (a clean-up; a failure ends its session anyway). */
function dropped(statement: Promise<unknown>): Promise<unknown> {
  return statement.catch(() => undefined);
}
