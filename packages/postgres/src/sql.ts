import type { LockMode } from "@locks/core";

/*
 * Every statement the backend runs. Keys, labels, the sequence name and the
 * channel payload are always parameters; nothing a caller passes is ever
 * spliced into SQL text. (LISTEN, CREATE SEQUENCE and the holders table take
 * identifiers, not parameters: they quote a name from the factory options,
 * see options.ts, and never see a key or a label.)
 *
 * Statements are named, so each connection parses them once.
 *
 * Every lock function is the bigint form (`pg_*advisory*(bigint)`): the
 * `$1::int8` casts pin it. The (int, int) form carries only token markers
 * (see `statements`), and its `::int4` casts pin it.
 */

/** A statement: its name (prepared once per connection) and text. */
export interface Statement {
  readonly name: string;
  readonly text: string;
}

const statement = (name: string, text: string): Statement => ({ name, text });

/** This database, as pg_locks names it. */
const THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())";

/**
 * The limit a key's semaphore holders use, from their limit markers (see
 * keys.ts): both halves held in shared mode with the same low 32 bits. NULL
 * when nobody holds the key as a semaphore. `$a`, `$b`: the halves' params.
 */
function semaphoreLimit(a: string, b: string, except = ""): string {
  return `SELECT objid::int8 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = 'ShareLock'
      AND classid IN (${a}::oid, ${b}::oid) AND database = ${THIS_DATABASE}${except}
    GROUP BY objid HAVING count(DISTINCT classid) = 2
    ORDER BY 1 LIMIT 1`;
}

/**
 * After a limit-1 grant of $1 (in `mode`): the token, or, when the key is
 * held as a semaphore, the lock given back and 0 (no token is 0: the client
 * then reads the limit, `SEMAPHORE_LIMIT`). Semaphore holders hold the
 * presence marker $2 in shared mode: when it can be taken exclusively (and
 * is let go at once), none exists; when not even in shared mode, another
 * such check holds it exclusively this instant, so no semaphore holder
 * holds it either; when only in shared mode, semaphore holders do (or that
 * check ended in between: then the client finds no limit and reports the
 * key taken). A semaphore request takes its markers before it checks for
 * limit-1 holders, and this check runs after the grant, so of two such
 * requests racing, at least one sees the other. No subquery: reading
 * pg_locks here would cost every grant the set-up of its plan (about a
 * third of the statement's server time). `sequence`: the sequence as a
 * regclass constant.
 */
function tokenUnlessSemaphore(mode: LockMode, sequence: string): string {
  const unlock = mode === "exclusive" ? "pg_advisory_unlock" : "pg_advisory_unlock_shared";
  return `CASE
    WHEN pg_try_advisory_lock($2::int8) THEN
      CASE WHEN pg_advisory_unlock($2::int8) THEN nextval(${sequence}) END
    WHEN NOT pg_try_advisory_lock_shared($2::int8) THEN nextval(${sequence})
    WHEN pg_advisory_unlock_shared($2::int8) AND ${unlock}($1::int8) THEN 0
  END`;
}

/** The limit a key's semaphore holders use (NULL when none): $1 $2 its limit markers' halves. */
export const SEMAPHORE_LIMIT = statement(
  "locks_semaphore_limit",
  `SELECT (${semaphoreLimit("$1", "$2")}) AS lim`,
);

/**
 * A semaphore waiter's turn: the waiters of a semaphore queue for its turn
 * lock in the server's queue (FIFO), and the one holding it polls the slots.
 * $1 turn id.
 */
export const WAIT_TURN = statement(
  "locks_wait_turn",
  "WITH granted AS MATERIALIZED (SELECT pg_advisory_lock($1::int8)) SELECT 0::int8 AS token FROM granted",
);

/** The next waiter's turn. $1 turn id. */
export const END_TURN = statement(
  "locks_end_turn",
  "SELECT pg_advisory_unlock($1::int8) AS released",
);

/** A poller announces itself: $1 interest marker. False only while a releaser checks it. */
export const INTEREST = statement(
  "locks_interest",
  "SELECT pg_try_advisory_lock_shared($1::int8) AS ok",
);
/** A poller leaves: $1 interest marker. */
export const DISINTEREST = statement(
  "locks_disinterest",
  "SELECT pg_advisory_unlock_shared($1::int8) AS ok",
);

/**
 * Whether this session holds a lock: `pg_locks` shows a bigint id as
 * classid (high 32 bits), objid (low 32 bits), objsubid 1.
 * $1 classid, $2 objid, $3 lock mode name.
 */
export const HELD = statement(
  "locks_held",
  `SELECT pg_backend_pid() AS pid, EXISTS (
     SELECT 1 FROM pg_locks
     WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
       AND classid = $1::oid AND objid = $2::oid AND objsubid = 1 AND mode = $3
   ) AS held`,
);

/** Interrupts a waiting queue connection. $1 its backend pid. */
export const CANCEL = statement("locks_cancel", "SELECT pg_cancel_backend($1::int) AS sent");

/** Keeps a lock-holding session busy and proves it answers. */
export const HEARTBEAT = statement("locks_heartbeat", "SELECT 1");

/** First statement on a connection: its pid, and whether the sequence ($1) and the table ($2) exist. */
export const PID =
  "SELECT pg_backend_pid() AS pid, to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS ready";

/** pg_locks' names of the two modes. */
export const LOCK_MODE_NAME: Readonly<Record<LockMode, string>> = {
  exclusive: "ExclusiveLock",
  shared: "ShareLock",
};

/** The high and the low 32 bits of an int8 SQL expression, each as an int4. */
const high = (int8: string) => `(${int8} >> 32)::int4`;
const low = (int8: string) => `((${int8} << 32) >> 32)::int4`;

/**
 * The token markers of a grant whose token is the column `token`, of the key
 * whose id is the int8 expression `key`: the two (int, int) advisory locks
 * (each half of the key's id, the token's low 32 bits), taken in shared mode
 * (never waited for) by the statement that took the lock, so that `inspect`
 * on any client reads each holder's token from pg_locks without a write. It
 * takes both to match a key (64 bits), as for any advisory id.
 */
const mark = (key: string) =>
  `CASE WHEN token > 0 THEN pg_try_advisory_lock_shared(${high(key)}, ${low("token")})
     AND pg_try_advisory_lock_shared(${low(key)}, ${low("token")}) END`;

/** Releases the token markers of the key `key` with the token's low 32 bits `bits`. */
const unmark = (key: string, bits: string) =>
  `pg_advisory_unlock_shared(${high(key)}, ${bits}::int4) AND pg_advisory_unlock_shared(${low(key)}, ${bits}::int4)`;

/**
 * The statements that take, mark and release locks, and note labelled
 * grants in the holders table (`table`, a quoted name from the options):
 * advisory locks carry no data. The token of every grant is in pg_locks (its
 * marker); a grant with a `holder` label also writes a row with it (token,
 * session pid, key id, label) in the statement that takes the lock, and its
 * release deletes it in the statement that unlocks: an unlabelled cycle
 * writes nothing. The table is unlogged (no WAL, no flush at commit; a server
 * crash empties it with the locks). A row counts only while its token is
 * live in pg_locks, so a crashed session's rows are ignored; connection setup
 * deletes them (`SETUP`), and forceRelease those of the sessions it ended.
 */
export function statements(table: string, sequenceName: string, channel: string) {
  /**
   * The sequence as a constant, resolved once per prepared statement (a
   * `$n::regclass` parameter is looked up in the catalog at every call); a
   * plan depending on it is replanned if it is dropped and made again.
   */
  const sequence = `'${sequenceName}'::regclass`;
  /** NOTIFY of the pollers of the interest marker $2 (the channel: an identifier from the options). */
  const notify = `pg_notify('${channel}', $2::text)`;
  /** With `noted`, the labelled variants: the label is their last parameter. */
  const grants = (noted: boolean) => {
    const suffix = noted ? "_noted" : "";
    /**
     * The grant `granted` (a query with a `token` column, run once: a
     * subquery behind OFFSET 0, which the planner never flattens, costs less
     * than a CTE), marked, and in the labelled variant noted with the key id
     * `key` and the label `holder` (parameters).
     */
    const marked = (granted: string, markerKey: string, key: string, holder: string) =>
      noted
        ? `WITH granted AS MATERIALIZED (${granted}), noted AS (
             INSERT INTO ${table} (token, pid, key_id, holder)
             SELECT token, pg_backend_pid(), ${key}, ${holder}::bytea FROM granted WHERE token > 0
           )
           SELECT *, ${mark(markerKey)} AS marked FROM granted`
        : `SELECT *, ${mark(markerKey)} AS marked FROM (${granted} OFFSET 0) granted`;
    /** Deletes the released grant's row ($token) in the labelled variant. */
    const unnoted = (token: string) =>
      noted ? `WITH unnoted AS (DELETE FROM ${table} WHERE token = ${token}::int8) ` : "";
    const byMode = <T>(make: (mode: LockMode, shared: string) => T): Record<LockMode, T> => ({
      exclusive: make("exclusive", ""),
      shared: make("shared", "_shared"),
    });

    return {
      /**
       * One attempt, one round trip: the token comes from the sequence in the
       * same statement, and only when the lock was granted (CASE evaluates its
       * conditions in order). `token` is NULL when the key is taken, and 0
       * when semaphore holders hold it. `pid` detects a connection swapped
       * under us (a transaction-mode pooler).
       * $1 key, $2 presence marker, [$3 label].
       */
      TRY: byMode((mode, shared) =>
        statement(
          `locks_try${shared}${suffix}`,
          marked(
            `SELECT CASE WHEN pg_try_advisory_lock${shared}($1::int8) THEN ${tokenUnlessSemaphore(mode, sequence)} END AS token,
               pg_backend_pid() AS pid`,
            "$1::int8",
            "$1::int8",
            "$3",
          ),
        ),
      ),

      /**
       * A second reader on a session that reads the key already: PostgreSQL
       * grants a session what it holds at once, even past a writer queued for
       * the key, so this asks only while nobody waits for the key in this
       * database (a waiter there queues behind a writer, or is one), as the
       * server does for the reader of another session. Then as TRY: the
       * session may not hold the key after all (its first reader's attempt,
       * still on the wire, may fail), and semaphore holders may have come
       * meanwhile. $1 $2 as TRY, $3 classid, $4 objid, [$5 label].
       */
      TRY_READ_AGAIN: statement(
        `locks_try_read_again${suffix}`,
        marked(
          `SELECT CASE
             WHEN EXISTS (
               SELECT 1 FROM pg_locks
               WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
                 AND classid = $3::oid AND objid = $4::oid AND database = ${THIS_DATABASE}
             ) THEN NULL
             WHEN pg_try_advisory_lock_shared($1::int8) THEN ${tokenUnlessSemaphore("shared", sequence)}
           END AS token, pg_backend_pid() AS pid`,
          "$1::int8",
          "$1::int8",
          "$5",
        ),
      ),

      /**
       * A semaphore attempt. First it takes the key's presence marker and its
       * limit markers (shared), then it checks who else holds the key:
       * limit-1 holders of the key itself (`other` = 1) or semaphore holders
       * with another limit (`other` = theirs); then, only when neither, it
       * tries the slots of $1 one after the other and stops at the first it
       * gets (a recursive query evaluates one slot per step, and a step runs
       * only while nothing was granted, so at most one slot is ever taken),
       * unless another session holds the semaphore's turn $11 $12 (classid,
       * objid): a waiter queued before this request, whom a freed slot is for.
       * Without a slot, it lets its markers go. Each step reads the one before
       * it (materialized), so they run in this order. $1 slot ids,
       * $2 sequence, $3 presence marker, $4 $5 the limit markers, $6 $7 the
       * key's classid and objid, $8 $9 the markers' halves, $10 the request's
       * marked limit, $13 the key's id, [$14 label].
       */
      TRY_SLOTS: statement(
        `locks_try_slots${suffix}`,
        marked(
          `WITH RECURSIVE
           marked AS MATERIALIZED (
             SELECT pg_advisory_lock_shared($3::int8) AS p, pg_advisory_lock_shared($4::int8) AS a,
               pg_advisory_lock_shared($5::int8) AS b
           ),
           checked AS MATERIALIZED (
             SELECT CASE
               WHEN EXISTS (
                 SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND classid = $6::oid AND objid = $7::oid AND database = ${THIS_DATABASE}
               ) THEN 1::int8
               ELSE (${semaphoreLimit("$8", "$9", " AND objid <> $10::oid")})
             END AS other
             FROM marked
           ),
           attempt(i, got) AS (
             SELECT 0, false FROM checked
             WHERE other IS NULL AND NOT EXISTS (
               SELECT 1 FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid <> pg_backend_pid()
                 AND classid = $11::oid AND objid = $12::oid AND database = ${THIS_DATABASE}
             )
             UNION ALL
             SELECT i + 1, pg_try_advisory_lock(($1::int8[])[i + 1])
             FROM attempt
             WHERE NOT got AND i < cardinality($1::int8[])
           ),
           won AS MATERIALIZED (SELECT ($1::int8[])[i]::text AS slot FROM attempt WHERE got)
           SELECT won.slot, CASE WHEN won.slot IS NOT NULL THEN nextval($2::regclass) END AS token,
             checked.other, pg_backend_pid() AS pid,
             CASE WHEN won.slot IS NULL THEN pg_advisory_unlock_shared($3::int8) END AS unmarked_p,
             CASE WHEN won.slot IS NULL THEN pg_advisory_unlock_shared($4::int8) END AS unmarked_a,
             CASE WHEN won.slot IS NULL THEN pg_advisory_unlock_shared($5::int8) END AS unmarked_b
           FROM checked LEFT JOIN won ON true`,
          "$13::int8",
          "$13::int8",
          "$14",
        ),
      ),

      /**
       * A blocking wait in the server's lock queue (bounded by the
       * connection's lock_timeout). The materialized CTE is evaluated before
       * the outer row exists, so the token is drawn after the grant, in grant
       * order; `token` is 0 as in TRY when semaphore holders hold the key
       * (the lock is given back then). $1 key, $2 presence marker, [$3 label].
       */
      WAIT: byMode((mode, shared) =>
        statement(
          `locks_wait${shared}${suffix}`,
          marked(
            `WITH locked AS MATERIALIZED (SELECT pg_advisory_lock${shared}($1::int8))
             SELECT ${tokenUnlessSemaphore(mode, sequence)} AS token FROM locked`,
            "$1::int8",
            "$1::int8",
            "$3",
          ),
        ),
      ),

      /**
       * Release, and in the same round trip, wake pollers: a poller holds the
       * key's interest marker ($2) in shared mode while it waits, so the
       * marker cannot be taken exclusively exactly when somebody waits; then
       * NOTIFY the channel with the marker as payload, unless the key is not free
       * after the unlock even for a reader: the server's lock queue handed it
       * on inside the unlock (a poller's attempt would be refused), or a
       * writer waits there. An uncontended release sends no notification,
       * nor does a handoff through the server's queue. One column (nobody
       * reads it, and each column costs the client a field to parse):
       * `num_nulls` evaluates every argument.
       * $1 key, $3 $4 the token markers (the key's id, the token's low 32
       * bits), [$5 the token: its row].
       */
      RELEASE: byMode((_mode, shared) =>
        statement(
          `locks_release${shared}${suffix}`,
          `${unnoted("$5")}SELECT num_nulls(pg_advisory_unlock${shared}($1::int8), ${unmark("$3::int8", "$4")},
             CASE WHEN pg_try_advisory_lock($2::int8) THEN pg_advisory_unlock($2::int8)
                  WHEN NOT pg_try_advisory_lock_shared($1::int8) THEN true
                  ELSE pg_advisory_unlock_shared($1::int8) AND ${notify} IS NULL END) AS nulls`,
        ),
      ),

      /**
       * Releases a semaphore slot ($1), its token markers ($3 the key's id,
       * $4 the token's low 32 bits) and the holder's presence and limit
       * markers ($5, $6, $7), then wakes pollers (the turn's holder among
       * them) of the interest marker $2 whenever there are any.
       * [$8 the token: its row.]
       */
      RELEASE_SLOT: statement(
        `locks_release_slot${suffix}`,
        `${unnoted("$8")}SELECT pg_advisory_unlock($1::int8) AS released, ${unmark("$3::int8", "$4")} AS unmarked,
           pg_advisory_unlock_shared($5::int8) AS unmarked_p,
           pg_advisory_unlock_shared($6::int8) AS unmarked_a,
           pg_advisory_unlock_shared($7::int8) AS unmarked_b,
           CASE WHEN pg_try_advisory_lock($2::int8) THEN pg_advisory_unlock($2::int8)
                ELSE ${notify} IS NULL END AS quiet`,
      ),
    };
  };

  return {
    /** Statements of unlabelled grants: nothing is written. */
    plain: grants(false),
    /** Statements of labelled grants: they write and delete the grant's row. */
    noted: grants(true),

    /**
     * The token for a wait whose grant raced a cancel (rare), marked, and
     * noted when labelled. The interrupted statement may have marked a token
     * of its own (a lock is not rolled back): the queue connection holds
     * only this key, so its markers of the key go first.
     * $1 sequence, $2 key, $3 label or NULL.
     */
    NEXT_TOKEN: statement(
      "locks_next_token",
      `WITH unmarked AS MATERIALIZED (
         SELECT count(pg_advisory_unlock_shared(${low("classid::int8")}, ${low("objid::int8")}))
         FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND objsubid = 2
           AND classid IN (${high("$2::int8")}::oid, ${low("$2::int8")}::oid)
       ),
       granted AS MATERIALIZED (SELECT nextval($1::regclass) AS token FROM unmarked),
       noted AS (
         INSERT INTO ${table} (token, pid, key_id, holder)
         SELECT token, pg_backend_pid(), $2::int8, $3::bytea FROM granted WHERE $3::bytea IS NOT NULL
       )
       SELECT token, ${mark("$2::int8")} AS marked FROM granted`,
    ),

    /** Clears whatever a queue connection may hold after a failed wait; it holds nothing else. */
    UNLOCK_ALL: statement(
      "locks_unlock_all",
      `WITH unnoted AS (DELETE FROM ${table} WHERE pid = pg_backend_pid())
       SELECT pg_advisory_unlock_all()`,
    ),

    /**
     * Who holds a key: a row per token marker pair of the key ($1 $2, its
     * id's halves, as pg_locks shows the key itself too) on a session that
     * holds the key (its mode) or the key's semaphore presence ($3 $4: a
     * slot), with the markers' low 32 bits of the token (`low`) and the
     * sequence's last value ($7), from which the token is told (see
     * `tokenOf` in backend.ts); `lim`, the limit of the key's semaphore
     * holders ($5 $6 the limit markers' halves).
     */
    HOLDERS: statement(
      "locks_holders",
      `WITH held AS MATERIALIZED (
         SELECT pid, classid, objid, objsubid, mode FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND database = ${THIS_DATABASE}
       )
       SELECT m.objid::int8 AS low, k.mode, p.pid IS NOT NULL AS slot,
         (${semaphoreLimit("$5", "$6")}) AS lim, pg_sequence_last_value($7::regclass) AS last
       FROM held m
       JOIN held m2 ON m2.pid = m.pid AND m2.objsubid = 2 AND m2.classid = $2::oid AND m2.objid = m.objid
       LEFT JOIN held k ON k.pid = m.pid AND k.objsubid = 1 AND k.classid = $1::oid AND k.objid = $2::oid
       LEFT JOIN held p ON p.pid = m.pid AND p.objsubid = 1 AND p.classid = $3::oid AND p.objid = $4::oid
       WHERE m.objsubid = 2 AND m.classid = $1::oid AND (k.pid IS NOT NULL OR p.pid IS NOT NULL)`,
    ),

    /** The labels of a key's labelled grants, by token: $1 the key's id. */
    LABELS: statement("locks_labels", `SELECT token, holder FROM ${table} WHERE key_id = $1::int8`),

    /**
     * Ends every other session that holds the key ($1 classid, $2 objid), or
     * the key's semaphore presence ($3 $4) with a token marker pair of the
     * key: a slot. Except the sessions $5 (this client's own: it releases
     * its holds itself). Waits up to $6 ms for each to end (its locks go with
     * it), deletes their rows, and NOTIFYs pollers of the key ($7 channel,
     * $8 interest marker) when it ended any.
     */
    FORCE_RELEASE: statement(
      "locks_force_release",
      `WITH held AS MATERIALIZED (
         SELECT pid, classid, objid, objsubid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND database = ${THIS_DATABASE}
           AND pid <> ALL ($5::int[])
       ),
       holding AS MATERIALIZED (
         SELECT pid FROM held WHERE objsubid = 1 AND classid = $1::oid AND objid = $2::oid
         UNION
         SELECT p.pid FROM held p
         JOIN held m ON m.pid = p.pid AND m.objsubid = 2 AND m.classid = $1::oid
         JOIN held m2 ON m2.pid = p.pid AND m2.objsubid = 2 AND m2.classid = $2::oid AND m2.objid = m.objid
         WHERE p.objsubid = 1 AND p.classid = $3::oid AND p.objid = $4::oid
       ),
       ended AS MATERIALIZED (SELECT pid, pg_terminate_backend(pid, $6::int8) AS gone FROM holding),
       unnoted AS (DELETE FROM ${table} WHERE pid IN (SELECT pid FROM ended WHERE gone))
       SELECT count(*)::int AS ended, count(*) FILTER (WHERE NOT gone)::int AS alive,
         CASE WHEN count(*) > 0 THEN pg_notify($7, $8) IS NULL END AS woken
       FROM ended`,
    ),

    /**
     * Creates the table (`IF NOT EXISTS`; see `statements`). A label is kept
     * as its UTF-8 bytes: text columns refuse a NUL character, labels may have one.
     */
    CREATE_TABLE: `CREATE UNLOGGED TABLE IF NOT EXISTS ${table} (
      token int8 PRIMARY KEY, pid int NOT NULL, key_id int8 NOT NULL, holder bytea NOT NULL)`,

    /**
     * Connection setup, once the sequence and table exist: the pid again (it
     * must be the same), lock_timeout for waits ($1; NULL leaves a given
     * client's own), and the rows of sessions that ended deleted (a session
     * of this pid before, or one gone from pg_stat_activity).
     */
    SETUP: `WITH stale AS (
        DELETE FROM ${table}
        WHERE pid = pg_backend_pid() OR pid NOT IN (SELECT pid FROM pg_stat_activity)
      )
      SELECT pg_backend_pid() AS pid,
        set_config('lock_timeout', COALESCE($1, current_setting('lock_timeout')), false) AS lock_timeout`,
  };
}

/** The statements of one holders table. */
export type Statements = ReturnType<typeof statements>;
