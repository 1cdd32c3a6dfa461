import {
  type Attempt,
  type Backend,
  backendUnavailable,
  type Capabilities,
  isLockError,
  type KeyStatus,
  type LockMode,
  type LockRequest,
  type LossReport,
  limitMismatch,
  lockClosed,
  type Unsubscribe,
  type WaitOptions,
} from "@locks/core";
import type { ClientConfig } from "pg";
import { Cancel, Closing } from "./cancel.js";
import { Connection, isInterrupted, PoolerError, type SetupOptions } from "./connection.js";
import {
  idHalves,
  keysOf,
  limitMarkers,
  MAX_MARKED_LIMIT,
  requestKeys,
  slotCandidates,
  slotIdsOf,
} from "./keys.js";
import { pollUntilGranted, Wakeups } from "./notify.js";
import type { ResolvedOptions } from "./options.js";
import { cancelBackend, retried, waitInQueue } from "./queue.js";
import {
  END_TURN,
  HELD,
  HOLDERS,
  LOCK_MODE_NAME,
  RELEASE,
  RELEASE_SLOT,
  SLOT_HOLDERS,
  TRY,
  TRY_READ_AGAIN,
  TRY_SLOTS,
} from "./sql.js";

const NAME = "postgres";
const NOT_GRANTED: Attempt = Object.freeze({ granted: false });

/** inspect() counts a semaphore's holders slot by slot up to this limit. */
const INSPECTED_SLOTS = 4_096;

/** How long a wait may wait for the spare connection being opened before it opens its own. */
const SPARE_WAIT_MS = 250;

/**
 * close() gives the waits this long to wind down (their cancels are sent at
 * once and land even when their connection closes next), then each
 * connection CLOSE_GRACE_MS to say goodbye before its socket is torn down:
 * a server that stopped answering holds close() up for about 300 ms.
 */
const WAITS_GRACE_MS = 100;
const CLOSE_GRACE_MS = 200;

/** Waits for `promise` to settle, `ms` to pass or `signal` to abort, whichever comes first; never rejects. */
function settledWithin(
  promise: Promise<unknown>,
  ms: number,
  signal: Cancel | undefined,
): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    const stop = signal?.onAbort(done);
    promise.then(done, done);
    function done(): void {
      clearTimeout(timer);
      stop?.();
      resolve();
    }
  });
}

/** A lock this backend holds for a lease. */
interface Holding {
  readonly conn: Connection;
  /** The advisory id: the key's, or the semaphore slot's. */
  readonly id: string;
  readonly mode: LockMode;
  readonly interest: string;
  /** A semaphore slot's presence and limit markers (released with it), by RELEASE_SLOT's order. */
  readonly markers?: readonly [presence: string, a: string, b: string];
}

/**
 * PostgreSQL session-level advisory locks.
 *
 * Connections: one session connection takes every non-blocking attempt and
 * holds what they grant; a wait queues in the server on a queue connection
 * of its own (opened on demand, up to maxConnections in all, kept for reuse
 * while idle), which then holds the lock it waited for until the release.
 */
export class PostgresBackend implements Backend {
  readonly name = NAME;
  readonly capabilities: Capabilities;

  readonly #options: ResolvedOptions;
  readonly #setup: SetupOptions;
  readonly #wakeups = new Wakeups();
  readonly #leases = new Map<string, Holding>();
  readonly #lossListeners = new Set<(report: LossReport) => void>();
  /** Every connection of ours that is open or opening, the session included. */
  readonly #conns = new Set<Connection>();
  readonly #idle: Connection[] = [];
  /** Queue connections open or being opened. */
  #queueCount = 0;
  #session: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  /** The spare queue connection being opened. */
  #warming: Promise<Connection | undefined> | undefined;
  /** A given client was adopted once; it cannot be replaced when it dies. */
  #adopted = false;
  #heartbeat: NodeJS.Timeout | undefined;
  readonly #closing = new Closing();
  #closed: Promise<void> | undefined;
  /** Connections being closed, awaited by close(). */
  readonly #closingConns = new Set<Promise<void>>();
  /** Connections being opened, awaited by close(). */
  readonly #opening = new Set<Promise<void>>();
  /** Acquires in progress, awaited by close(). */
  readonly #pending = new Set<Promise<unknown>>();

  constructor(options: ResolvedOptions) {
    this.#options = options;
    this.#setup = {
      sequence: options.sequence,
      lockTimeoutMs: options.client === undefined ? options.lockTimeoutMs : undefined,
      connectTimeoutMs: options.connectTimeoutMs,
    };
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

  tryAcquire(request: LockRequest): Promise<Attempt> {
    if (this.#closing.closed) return Promise.reject(lockClosed("postgres backend"));
    const live = this.#session;
    // The hot path stays free of extra awaits: an uncontended cycle is two round trips and little else.
    if (live !== undefined && !live.dead) return this.#attempt(live, request);
    return this.#liveSession().then((session) => this.#attempt(session, request));
  }

  acquire(request: LockRequest, wait: WaitOptions): Promise<Attempt & { granted: true }> {
    const signal = new Cancel(wait.signal, this.#closing);
    if (signal.aborted) return Promise.reject(signal.reason);
    const pending = this.#acquire(request, signal);
    this.#pending.add(pending);
    void pending.then(
      () => this.#pending.delete(pending),
      () => this.#pending.delete(pending),
    );
    // A wait the caller gave up rejects once it left the server's queue (nothing is left behind:
    // a round trip for the cancel, at most about a second when the server does not answer). One
    // ended by a close (the core's, or this backend's) rejects at once: close() winds it down, and
    // must not wait for a server that stopped answering.
    return new Promise((resolve, reject) => {
      let gaveUp = false;
      const giveUp = (): void => {
        gaveUp = true;
        reject(signal.reason);
      };
      const stop = signal.onAbort(() => {
        if (this.#closing.closed || isLockError(signal.reason, "LOCK_CLOSED")) giveUp();
      });
      const stopClosing = this.#closing.listen(giveUp);
      pending.then(
        (grant) => {
          stop();
          stopClosing();
          if (gaveUp) void this.#release(request.owner);
          else resolve(grant);
        },
        (error: unknown) => {
          stop();
          stopClosing();
          reject(error);
        },
      );
    });
  }

  async extend(request: LockRequest, _ttlMs: number): Promise<boolean> {
    const holding = this.#leases.get(request.owner);
    if (holding === undefined || holding.conn.dead) return false;
    const { classid, objid } = idHalves(holding.id);
    let rows: Record<string, unknown>[];
    try {
      rows = await retried(holding.conn, () =>
        holding.conn.query(HELD, [classid, objid, LOCK_MODE_NAME[holding.mode]]),
      );
    } catch (error) {
      if (holding.conn.dead) return false;
      throw backendUnavailable(NAME, error);
    }
    const row = rows[0];
    return (
      row?.held === true &&
      Number(row.pid) === holding.conn.pid &&
      this.#leases.get(request.owner) === holding
    );
  }

  release(request: LockRequest): Promise<void> {
    return this.#release(request.owner);
  }

  #release(owner: string): Promise<void> {
    const holding = this.#leases.get(owner);
    if (holding === undefined) return Promise.resolve();
    this.#leases.delete(owner);
    const { conn } = holding;
    conn.leases.delete(owner);
    if (conn.dead) return Promise.resolve();
    const { markers } = holding;
    const values = [holding.id, holding.interest, this.#options.channel, holding.interest];
    if (markers !== undefined) values.push(...markers);
    const statement = markers === undefined ? RELEASE[holding.mode] : RELEASE_SLOT;
    const done = (): void => {
      conn.unhold(holding.id);
      if (markers !== undefined) unholdSemaphore(conn, markers[0]);
      this.#wakeups.wake(holding.interest);
      if (conn !== this.#session) this.#recycle(conn);
    };
    const unknownState = (failure: unknown): void => {
      // Unknown state: end the session, which frees every lock it holds (the others are reported lost).
      conn.fail(failure);
    };
    return conn.query(statement, values).then(done, (error: unknown) => {
      if (conn.dead || !isInterrupted(error)) {
        unknownState(error);
        done();
        return;
      }
      // A late cancel (on a queue connection) interrupted it: once more, as for any clean-up.
      return retried(conn, () => conn.query(statement, values), 1)
        .then(undefined, unknownState)
        .then(done);
    });
  }

  // close and onLoss are bound: they work when called through a Proxy or detached.
  readonly onLoss = (listener: (report: LossReport) => void): Unsubscribe => {
    this.#lossListeners.add(listener);
    return () => {
      this.#lossListeners.delete(listener);
    };
  };

  /**
   * Who holds a key, from pg_locks. The server shows one row per session and
   * lock, so the readers of one session of another client count as one
   * holder (this backend's own are counted from its leases). A semaphore's
   * holders are counted by its slots (by the sessions holding its markers
   * when its limit is above INSPECTED_SLOTS).
   */
  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    const session = await this.#liveSession();
    const keys = keysOf(namespace, key);
    const { classid, objid } = idHalves(keys.key);
    try {
      const rows = await session.query(HOLDERS, [classid, objid, ...keys.markerHalves]);
      const holders: { mode: LockMode }[] = [];
      let limit: number | undefined;
      for (const row of rows) {
        if (row.lim === null) {
          const mode: LockMode = row.mode === "ShareLock" ? "shared" : "exclusive";
          const ours = [...this.#leases.values()].filter(
            (h) => h.id === keys.key && !h.conn.dead && h.conn.pid === Number(row.pid),
          ).length;
          for (let i = 0; i < Math.max(ours, 1); i++) holders.push({ mode });
          limit ??= 1;
          continue;
        }
        const semaphoreLimit = Number(row.lim);
        limit = semaphoreLimit;
        let count = Number(row.sessions);
        if (semaphoreLimit <= INSPECTED_SLOTS) {
          const slots = slotIdsOf(namespace, key, semaphoreLimit).map(idHalves);
          const [held] = await session.query(SLOT_HOLDERS, [
            slots.map((slot) => slot.classid),
            slots.map((slot) => slot.objid),
          ]);
          count = Number(held?.held);
        }
        for (let i = 0; i < count; i++) holders.push({ mode: "exclusive" });
      }
      return {
        held: holders.length > 0,
        ...(limit !== undefined ? { limit } : {}),
        holders,
      };
    } catch (error) {
      throw backendUnavailable(NAME, error);
    }
  }

  readonly close = (): Promise<void> => {
    this.#closed ??= this.#close();
    return this.#closed;
  };

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
  #attempt(conn: Connection, request: LockRequest): Promise<Attempt> {
    const keys = requestKeys(request);
    if (request.limit > 1) return this.#attemptSlots(conn, request, keys.interest);
    const semaphore = conn.semaphores.get(keys.presence);
    if (semaphore !== undefined) return Promise.reject(limitMismatch(1, semaphore.limit));
    const held = conn.holds.get(keys.key);
    if (held !== undefined && (held.mode === "exclusive" || request.mode === "exclusive")) {
      return Promise.resolve(NOT_GRANTED);
    }
    conn.hold(keys.key, request.mode);
    let values: unknown[];
    if (held === undefined) {
      values = [keys.key, this.#options.sequence, keys.presence, ...keys.markerHalves];
    } else {
      const { classid, objid } = idHalves(keys.key);
      values = [keys.key, this.#options.sequence, classid, objid];
    }
    return conn.query(held === undefined ? TRY[request.mode] : TRY_READ_AGAIN, values).then(
      (rows) => {
        const row = rows[0];
        if (row?.token === null || row?.token === undefined) {
          conn.unhold(keys.key);
          return NOT_GRANTED;
        }
        const token = BigInt(String(row.token));
        if (token < 0n) {
          // Semaphore holders hold the key: the statement gave the lock back.
          conn.unhold(keys.key);
          throw limitMismatch(1, Number(-token));
        }
        return this.#granted(conn, request, keys.key, request.mode, keys.interest, row);
      },
      (error: unknown) => {
        conn.unhold(keys.key);
        throw backendUnavailable(NAME, error);
      },
    );
  }

  async #attemptSlots(conn: Connection, request: LockRequest, interest: string): Promise<Attempt> {
    const keys = requestKeys(request);
    const candidates = slotCandidates(request).filter((id) => !conn.holds.has(id));
    if (candidates.length === 0) return NOT_GRANTED;
    const [a, b] = limitMarkers(keys, request.limit);
    const { classid, objid } = idHalves(keys.key);
    const turn = idHalves(keys.turn);
    for (const id of candidates) conn.hold(id, "exclusive");
    holdSemaphore(conn, keys.presence, request.limit);
    let row: Record<string, unknown> | undefined;
    try {
      [row] = await conn.query(TRY_SLOTS, [
        candidates,
        this.#options.sequence,
        keys.presence,
        a,
        b,
        classid,
        objid,
        ...keys.markerHalves,
        String(Math.min(request.limit, MAX_MARKED_LIMIT)),
        turn.classid,
        turn.objid,
      ]);
    } catch (error) {
      for (const id of candidates) conn.unhold(id);
      unholdSemaphore(conn, keys.presence);
      throw backendUnavailable(NAME, error);
    }
    const slot = typeof row?.slot === "string" ? row.slot : undefined;
    for (const id of candidates) if (id !== slot) conn.unhold(id);
    if (slot === undefined || row === undefined) {
      unholdSemaphore(conn, keys.presence);
      const other = row?.other;
      if (other !== null && other !== undefined) throw limitMismatch(request.limit, Number(other));
      return NOT_GRANTED;
    }
    return this.#granted(conn, request, slot, "exclusive", interest, row, [keys.presence, a, b]);
  }

  #granted(
    conn: Connection,
    request: LockRequest,
    id: string,
    mode: LockMode,
    interest: string,
    row: Record<string, unknown>,
    markers?: Holding["markers"],
  ): Attempt {
    if (Number(row.pid) !== conn.pid) {
      conn.unhold(id);
      if (markers !== undefined) unholdSemaphore(conn, markers[0]);
      const error = new PoolerError(conn.pid, Number(row.pid));
      conn.fail(error);
      throw backendUnavailable(NAME, error);
    }
    if (conn.dead) {
      // The session ended right after the grant: the lock went with it.
      conn.unhold(id);
      if (markers !== undefined) unholdSemaphore(conn, markers[0]);
      throw backendUnavailable(NAME, new Error("the connection to PostgreSQL was lost"));
    }
    this.#hold(request.owner, {
      conn,
      id,
      mode,
      interest,
      ...(markers !== undefined ? { markers } : {}),
    });
    return { granted: true, fencingToken: BigInt(String(row.token)) };
  }

  #hold(owner: string, holding: Holding): void {
    this.#leases.set(owner, holding);
    holding.conn.leases.add(owner);
    const every = this.#options.heartbeatMs;
    if (every > 0 && this.#heartbeat === undefined && !this.#closing.closed) {
      this.#heartbeat = setInterval(() => {
        for (const conn of new Set([...this.#leases.values()].map((h) => h.conn))) {
          conn.heartbeat(every);
        }
      }, every);
      this.#heartbeat.unref();
    }
  }

  // --- waiting --------------------------------------------------------------

  async #acquire(request: LockRequest, signal: Cancel): Promise<Attempt & { granted: true }> {
    if (this.#options.maxConnections > 1) {
      for (;;) {
        const conn = await this.#queueConnection(signal);
        if (conn === undefined) break; // every connection is busy: poll instead
        const granted =
          request.limit === 1
            ? await this.#waitOn(conn, request, signal)
            : await this.#waitTurn(conn, request, signal);
        if (granted !== undefined) return granted;
        // The connection died while waiting: queue again on another.
      }
    }
    return this.#poll(request, signal, () => this.#liveSession());
  }

  /** Polls (woken by notifications) until granted; attempts run on `on` (the session, by default). */
  #poll(
    request: LockRequest,
    signal: Cancel,
    on: () => Promise<Connection>,
  ): Promise<Attempt & { granted: true }> {
    return pollUntilGranted(
      {
        channel: this.#options.channel,
        wakeups: this.#wakeups,
        session: () => this.#liveSession(),
        attempt: async (_session, r) => this.#attempt(await on(), r),
      },
      request,
      signal,
      (r) => this.release(r),
    );
  }

  /**
   * A semaphore wait in FIFO order: a waiter cannot queue in the server for
   * "any of N slots", so it queues on `conn` for the semaphore's turn, then
   * polls the slots from `conn` (which holds the slot it gets), and hands the
   * turn to the next waiter. Requests without the turn leave freed slots to
   * its holder (TRY_SLOTS). Undefined when `conn` died and the wait should
   * move to another.
   */
  async #waitTurn(
    conn: Connection,
    request: LockRequest,
    signal: Cancel,
  ): Promise<(Attempt & { granted: true }) | undefined> {
    const { turn } = requestKeys(request);
    const host = { sequence: this.#options.sequence, cancel: (pid: number) => this.#cancel(pid) };
    const outcome = await waitInQueue(host, conn, turn, "exclusive", undefined, signal);
    if (outcome.kind !== "granted" || conn.dead) {
      this.#recycle(conn);
      if (signal.aborted) throw signal.reason;
      if (outcome.kind === "failed" && !conn.dead) throw backendUnavailable(NAME, outcome.error);
      return undefined;
    }
    // Holding the turn: the connection is not idle, whether it gets a slot or not.
    conn.waiting = true;
    try {
      return await this.#poll(request, signal, () => Promise.resolve(conn));
    } catch (error) {
      if (conn.dead && !signal.aborted) return undefined;
      throw error;
    } finally {
      if (!conn.dead) {
        await retried(conn, () => conn.query(END_TURN, [turn])).catch((error: unknown) =>
          conn.fail(error),
        );
      }
      conn.waiting = false;
      this.#recycle(conn);
    }
  }

  /** Waits on a queue connection; undefined when it died and the wait should move to another. */
  async #waitOn(
    conn: Connection,
    request: LockRequest,
    signal: Cancel,
  ): Promise<(Attempt & { granted: true }) | undefined> {
    const keys = requestKeys(request);
    conn.hold(keys.key, request.mode);
    const outcome = await waitInQueue(
      { sequence: this.#options.sequence, cancel: (pid) => this.#cancel(pid) },
      conn,
      keys.key,
      request.mode,
      [keys.presence, ...keys.markerHalves],
      signal,
    );
    if (outcome.kind === "granted" && !conn.dead) {
      this.#hold(request.owner, {
        conn,
        id: keys.key,
        mode: request.mode,
        interest: keys.interest,
      });
      return { granted: true, fencingToken: outcome.token };
    }
    conn.unhold(keys.key);
    this.#recycle(conn);
    if (signal.aborted) throw signal.reason;
    if (outcome.kind === "mismatch") throw limitMismatch(1, outcome.limit);
    if (outcome.kind === "failed" && !conn.dead) throw backendUnavailable(NAME, outcome.error);
    return undefined;
  }

  /** pg_cancel_backend for a waiting queue connection, sent on the session. */
  async #cancel(pid: number): Promise<void> {
    await cancelBackend(await this.#liveSession(), pid);
  }

  // --- connections ----------------------------------------------------------

  /**
   * The session connection, (re)connected when needed; BACKEND_UNAVAILABLE
   * when it cannot be. While closing, only a live session is handed out (to
   * cancel waits), and none is opened.
   */
  async #liveSession(): Promise<Connection> {
    const session = this.#session;
    if (session !== undefined && !session.dead) return session;
    if (this.#closing.closed) throw lockClosed("postgres backend");
    this.#connecting ??= this.#connectSession().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connectSession(): Promise<Connection> {
    const { client, clientConfig } = this.#options;
    let conn: Connection;
    try {
      if (client !== undefined) {
        if (this.#adopted)
          throw new Error("the pg.Client given to the backend lost its connection");
        this.#adopted = true;
        conn = await Connection.adopt(client, this.#setup, this.#onDeath);
      } else {
        conn = await this.#open(clientConfig ?? {});
        this.#conns.add(conn);
      }
    } catch (error) {
      throw backendUnavailable(NAME, error);
    }
    if (this.#closing.closed) {
      await this.#closeConnection(conn);
      throw lockClosed("postgres backend");
    }
    this.#session = conn;
    return conn;
  }

  /** Opens a connection of ours; close() waits for the ones still opening. */
  #open(config: ClientConfig): Promise<Connection> {
    const opening = Connection.open(config, this.#setup, this.#onDeath, this.#closing);
    const settled = opening.then(
      () => undefined,
      () => undefined,
    );
    this.#opening.add(settled);
    void settled.then(() => this.#opening.delete(settled));
    return opening;
  }

  /** An idle queue connection, a new one, or undefined when maxConnections are open. */
  async #queueConnection(signal?: Cancel): Promise<Connection | undefined> {
    for (;;) {
      for (let conn = this.#idle.pop(); conn !== undefined; conn = this.#idle.pop()) {
        if (conn.idleTimer !== undefined) clearTimeout(conn.idleTimer);
        conn.idleTimer = undefined;
        if (!conn.dead) {
          this.#warmSpare();
          return conn;
        }
      }
      // A spare on its way is nearer than a new connection, unless it is stuck (a partition
      // swallowed its setup): wait for it a little, then open another.
      if (this.#warming === undefined) break;
      await settledWithin(this.#warming, SPARE_WAIT_MS, signal);
      signal?.throwIfAborted();
      if (this.#idle.length === 0) break;
    }
    const conn = await this.#openQueueConnection();
    if (conn === undefined) return undefined;
    if (signal?.aborted || this.#closing.closed) {
      this.#recycle(conn);
      signal?.throwIfAborted();
      throw lockClosed("postgres backend");
    }
    return conn;
  }

  /** Opens a queue connection, unless maxConnections (the session included) are open. */
  async #openQueueConnection(): Promise<Connection | undefined> {
    if (
      this.#options.client !== undefined ||
      this.#queueCount + 1 >= this.#options.maxConnections
    ) {
      return undefined;
    }
    this.#queueCount++;
    let conn: Connection;
    try {
      conn = await this.#open(this.#options.clientConfig ?? {});
    } catch (error) {
      this.#queueCount--;
      throw backendUnavailable(NAME, error);
    }
    this.#conns.add(conn);
    return conn;
  }

  /**
   * Keeps one idle queue connection ready, so that a wait joins the server's
   * queue at once instead of after a connect (which would also let a later
   * waiter overtake it).
   */
  #warmSpare(): void {
    if (this.#warming !== undefined || this.#idle.length > 0 || this.#closing.closed) {
      return;
    }
    const warming = this.#openQueueConnection().then((conn) => {
      if (conn !== undefined) this.#recycle(conn);
      return conn;
    });
    this.#warming = warming;
    warming.then(
      () => {
        this.#warming = undefined;
      },
      () => {
        this.#warming = undefined;
      },
    );
  }

  /**
   * Puts a queue connection that holds nothing back in the idle pool (or
   * closes it). One idle connection is kept as the spare; others close after
   * idleTimeoutMs.
   */
  #recycle(conn: Connection): void {
    if (conn.dead || conn === this.#session || conn.leases.size > 0 || conn.waiting) return;
    if (this.#closing.closed) {
      this.#forget(conn);
      void this.#closeConnection(conn);
      return;
    }
    if (this.#idle.includes(conn)) return;
    this.#idle.push(conn);
    if (this.#idle.length === 1) return;
    conn.idleTimer = setTimeout(() => {
      conn.idleTimer = undefined;
      const index = this.#idle.indexOf(conn);
      if (index < 0 || this.#idle.length === 1) return;
      this.#idle.splice(index, 1);
      this.#forget(conn);
      void this.#closeConnection(conn);
    }, this.#options.idleTimeoutMs);
    conn.idleTimer.unref();
  }

  /** Closes a connection of ours; close() waits for every such close. */
  #closeConnection(conn: Connection): Promise<void> {
    const closing = conn.close(CLOSE_GRACE_MS);
    this.#closingConns.add(closing);
    void closing.then(() => this.#closingConns.delete(closing));
    return closing;
  }

  #forget(conn: Connection): void {
    if (!this.#conns.delete(conn)) return;
    if (conn !== this.#session) this.#queueCount--;
  }

  /** A session ended: every lease on it is lost, at once. */
  readonly #onDeath = (conn: Connection, cause: unknown): void => {
    const owners = [...conn.leases];
    conn.leases.clear();
    conn.holds.clear();
    conn.semaphores.clear();
    for (const owner of owners) this.#leases.delete(owner);
    const index = this.#idle.indexOf(conn);
    if (index >= 0) this.#idle.splice(index, 1);
    this.#forget(conn);
    if (conn === this.#session) {
      if (this.#options.client === undefined) this.#session = undefined;
      // Pollers announced themselves on that session: they must do it again on the next one.
      this.#wakeups.wakeAll();
    }
    const detail = cause instanceof Error ? `: ${cause.message}` : "";
    for (const owner of owners) {
      const report: LossReport = {
        owner,
        reason: `the PostgreSQL session holding the lock ended${detail}`,
        cause,
      };
      for (const listener of [...this.#lossListeners]) listener(report);
    }
  };

  async #close(): Promise<void> {
    this.#closing.close(lockClosed("postgres backend"));
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    // Waits end on the closing signal (their cancels go out on the session), connections being
    // opened are torn down by it. Whatever a dead server leaves hanging ends with its socket below.
    const started = [...this.#pending, ...this.#opening, this.#connecting];
    await settledWithin(Promise.allSettled(started), WAITS_GRACE_MS, undefined);
    const given = this.#options.client !== undefined ? this.#session : undefined;
    if (given !== undefined && !given.dead) {
      // Locks on a given client outlive this backend unless released here.
      const farewell = async (): Promise<void> => {
        await Promise.allSettled([...given.leases].map((owner) => this.#release(owner)));
        if (given.listening) {
          await given.query(`UNLISTEN "${this.#options.channel}"`).catch(() => undefined);
        }
      };
      await settledWithin(farewell(), CLOSE_GRACE_MS, undefined);
      given.detach();
    }
    for (const conn of this.#idle) if (conn.idleTimer !== undefined) clearTimeout(conn.idleTimer);
    this.#idle.length = 0;
    const conns = [...this.#conns];
    this.#conns.clear();
    await Promise.allSettled(conns.map((conn) => this.#closeConnection(conn)));
    while (this.#closingConns.size > 0) await Promise.allSettled([...this.#closingConns]);
    // With their sockets gone, the waits still running fail at once.
    await settledWithin(Promise.allSettled([...this.#pending]), CLOSE_GRACE_MS, undefined);
    this.#leases.clear();
    this.#lossListeners.clear();
  }
}

/** Records one more semaphore of `limit` on `conn`, by its presence marker. */
function holdSemaphore(conn: Connection, presence: string, limit: number): void {
  const entry = conn.semaphores.get(presence);
  if (entry === undefined) conn.semaphores.set(presence, { limit, count: 1 });
  else entry.count++;
}

/** Forgets one semaphore of `conn` by its presence marker. */
function unholdSemaphore(conn: Connection, presence: string): void {
  const entry = conn.semaphores.get(presence);
  if (entry !== undefined && --entry.count <= 0) conn.semaphores.delete(presence);
}
