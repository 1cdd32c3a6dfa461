import { type LockMode, onAbort } from "@locks/core/backend";
import { type Connection, isInterrupted } from "./connection.js";
import { idHalves } from "./keys.js";
import { HELD, LOCK_MODE_NAME, type Statements, WAIT_TURN } from "./sql.js";

/*
 * A wait in the server's own lock queue: `pg_advisory_lock` on a connection
 * that holds nothing else, which then holds the lock. The server hands the
 * lock over inside the holder's unlock, so a handoff costs no polling and
 * waiters are served in FIFO order.
 *
 * Giving up is the delicate part. The wait is interrupted with
 * `pg_cancel_backend` (sent on another connection); but the grant can race
 * the cancel (or the lock_timeout): PostgreSQL then raises the error AND
 * keeps the lock. So after any interrupted wait the connection checks
 * pg_locks, and unlocks what it got when the caller gave up. A cancel that
 * arrives late can also interrupt the next statement: every clean-up
 * statement is retried when that happens.
 */

/** What the queue needs from the backend. */
export interface QueueHost {
  /** The quoted sequence name. */
  readonly sequence: string;
  readonly sql: Statements;
  /**
   * Sends pg_cancel_backend for `conn` on another connection; resolves when
   * it was sent. Undefined when nobody is to wait for it: the backend is
   * closing, and tears `conn` down next (so no grace timer either).
   */
  cancel(conn: Connection): Promise<unknown> | undefined;
}

/** How a wait ended. */
export type WaitOutcome =
  | { readonly kind: "granted"; readonly token: bigint }
  /** The caller gave up; the connection holds nothing. */
  | { readonly kind: "aborted" }
  /** The connection died or misbehaved; it holds nothing (it is gone, or was cleared). */
  | { readonly kind: "failed"; readonly error: unknown }
  /** Granted, but semaphore holders hold the key: given back, it holds nothing. */
  | { readonly kind: "mismatch" };

/** A wait for a key (not a turn): its grant is marked, and noted with `holder` if any. */
export interface KeyWait {
  /** The key's semaphore presence marker, which a limit-1 grant checks. */
  readonly presence: string;
  readonly holder: string | undefined;
}

/** How long an aborted wait may take to be cancelled before its connection is torn down. */
const CANCEL_GRACE_MS = 1_000;

/**
 * Waits for `id` on `conn` until granted or `signal` aborts: a key, whose
 * grant is checked against semaphore holders, draws a token and is noted
 * (`key`), or a semaphore's turn (`key` undefined, no token). Re-enters the
 * queue when its lock_timeout passes. The connection holds nothing before.
 * `signal` is the core's: timeout, the caller's abort, or close().
 */
export async function waitInQueue(
  host: QueueHost,
  conn: Connection,
  id: string,
  mode: LockMode,
  key: KeyWait | undefined,
  signal: AbortSignal,
): Promise<WaitOutcome> {
  const holder = key?.holder;
  const grants = holder === undefined ? host.sql.plain : host.sql.noted;
  const statement = key === undefined ? WAIT_TURN : grants.WAIT[mode];
  const values: unknown[] = key === undefined ? [id] : [id, key.presence];
  if (holder !== undefined) values.push(Buffer.from(holder));
  conn.waiting = true;
  try {
    for (;;) {
      if (signal.aborted) return { kind: "aborted" };
      const waiting = conn.query(statement, values).then(
        (rows) => ({ ok: true as const, token: BigInt(String(rows[0]?.token)) }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      let cancelled: Promise<unknown> | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      const cancel = (): void => {
        cancelled = host.cancel(conn)?.catch(() => undefined);
        if (cancelled === undefined) return;
        // If the cancel cannot reach the server, the session is torn down instead; the server then drops the wait.
        graceTimer = setTimeout(
          () => conn.fail(new Error("a cancelled wait did not end")),
          CANCEL_GRACE_MS,
        );
      };
      const stopListening = onAbort(signal, cancel);
      const result = await waiting;
      stopListening();
      if (graceTimer !== undefined) clearTimeout(graceTimer);
      // A cancel still on its way could interrupt the next statement: let it land first
      // (unless the connection is gone anyway, and the cancel may be stuck reconnecting).
      if (cancelled !== undefined && !conn.dead) await cancelled;

      if (conn.dead)
        return { kind: "failed", error: result.ok ? new Error("connection lost") : result.error };
      if (result.ok) {
        // The statement gave the lock back: semaphore holders hold the key.
        // (A turn's token is always 0.)
        if (result.token === 0n && key !== undefined) return { kind: "mismatch" };
        if (!signal.aborted) return { kind: "granted", token: result.token };
        return clear(host, conn, { kind: "aborted" });
      }
      if (!isInterrupted(result.error))
        return clear(host, conn, { kind: "failed", error: result.error });
      // Cancelled or timed out: the grant may have raced it, and then the lock is held after all.
      let held: boolean;
      try {
        held = await retried(conn, () => holds(conn, id, mode));
      } catch (error) {
        return clear(host, conn, { kind: "failed", error });
      }
      if (signal.aborted)
        return held ? clear(host, conn, { kind: "aborted" }) : { kind: "aborted" };
      if (!held) continue;
      // A turn draws no token (WAIT_TURN's 0).
      if (key === undefined) return { kind: "granted", token: 0n };
      // (A grant that raced the interruption skips WAIT's semaphore check: mixing limits on one key is
      // refused everywhere else, and here only when its holders came between the two statements.)
      try {
        const values = [host.sequence, id, holder === undefined ? null : Buffer.from(holder)];
        const rows = await retried(conn, () => conn.query(host.sql.NEXT_TOKEN, values));
        return { kind: "granted", token: BigInt(String(rows[0]?.token)) };
      } catch (error) {
        return clear(host, conn, { kind: "failed", error });
      }
    }
  } finally {
    conn.waiting = false;
  }
}

/** Unlocks everything the (otherwise empty) queue connection holds, then reports `outcome`. */
async function clear(
  host: QueueHost,
  conn: Connection,
  outcome: WaitOutcome,
): Promise<WaitOutcome> {
  // Unknown state when that fails: drop the session, which frees whatever it held.
  const unlock = (): Promise<unknown> => conn.query(host.sql.UNLOCK_ALL);
  if (!conn.dead) await retried(conn, unlock).catch((e) => conn.fail(e));
  return outcome;
}

/** Whether `conn`'s session holds `id` in `mode` (and is the session it was: no pooler in between). */
export async function holds(conn: Connection, id: string, mode: LockMode): Promise<boolean> {
  const { classid, objid } = idHalves(id);
  const [row] = await conn.query(HELD, [classid, objid, LOCK_MODE_NAME[mode]]);
  return row?.held === true && Number(row.pid) === conn.pid;
}

/** Runs `statement`, and again when a late cancel interrupted it (57014), up to 3 attempts in all. */
export async function retried<T>(conn: Connection, statement: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await statement();
    } catch (error) {
      if (attempt >= 2 || conn.dead || !isInterrupted(error)) throw error;
    }
  }
}
