import type { LockMode } from "@locks/core";

/*
 * Every statement the backend runs. Keys, the sequence name and the channel
 * payload are always parameters; nothing a caller passes is ever spliced
 * into SQL text. (LISTEN and CREATE SEQUENCE take identifiers, not
 * parameters: those two quote a name from the factory options, see
 * connection.ts, and never see a key.)
 *
 * Statements are named, so each connection parses them once.
 *
 * Every lock function is the bigint form (`pg_*advisory*(bigint)`): the
 * `$1::int8` casts pin it, so the (int, int) form is never reached.
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
 * held as a semaphore, the lock given back and minus that limit. Semaphore
 * holders hold the presence marker $3 in shared mode: when it can be taken
 * exclusively (and is let go at once), none exists; when not (a holder, or
 * another such check at the same instant), pg_locks tells. A semaphore
 * request takes its markers before it checks for limit-1 holders, and this
 * check runs after the grant, so of two such requests racing, at least one
 * sees the other. $2 sequence, $4 $5 the limit markers' halves.
 */
function tokenUnlessSemaphore(mode: LockMode): string {
  const unlock = mode === "exclusive" ? "pg_advisory_unlock" : "pg_advisory_unlock_shared";
  return `CASE
    WHEN pg_try_advisory_lock($3::int8) THEN
      CASE WHEN pg_advisory_unlock($3::int8) THEN nextval($2::regclass) END
    ELSE (
      SELECT CASE WHEN s.other IS NULL THEN nextval($2::regclass)
                  WHEN ${unlock}($1::int8) THEN -s.other END
      FROM (SELECT (${semaphoreLimit("$4", "$5")}) AS other) s
    )
  END`;
}

/**
 * One attempt, one round trip: the token comes from the sequence in the same
 * statement, and only when the lock was granted (CASE evaluates its
 * conditions in order). `token` is NULL when the key is taken, and negative
 * (minus their limit) when semaphore holders hold it. `pid` detects a
 * connection swapped under us (a transaction-mode pooler). $1 key,
 * $2 sequence, $3 presence marker, $4 $5 limit markers' halves.
 */
export const TRY: Readonly<Record<LockMode, Statement>> = {
  exclusive: statement(
    "locks_try",
    `SELECT CASE WHEN pg_try_advisory_lock($1::int8) THEN ${tokenUnlessSemaphore("exclusive")} END AS token,
       pg_backend_pid() AS pid`,
  ),
  shared: statement(
    "locks_try_shared",
    `SELECT CASE WHEN pg_try_advisory_lock_shared($1::int8) THEN ${tokenUnlessSemaphore("shared")} END AS token,
       pg_backend_pid() AS pid`,
  ),
};

/**
 * A second reader on a session that reads the key already: PostgreSQL
 * grants a session what it holds at once, even past a writer queued for the
 * key, so this asks only while nobody waits for the key in this database (a
 * waiter there queues behind a writer, or is one), as the server does for
 * the reader of another session. Then as TRY: the session may not hold the
 * key after all (its first reader's attempt, still on the wire, may fail),
 * and semaphore holders may have come meanwhile. $1 to $5 as TRY, $6 classid,
 * $7 objid.
 */
export const TRY_READ_AGAIN = statement(
  "locks_try_read_again",
  `SELECT CASE
     WHEN EXISTS (
       SELECT 1 FROM pg_locks
       WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
         AND classid = $6::oid AND objid = $7::oid AND database = ${THIS_DATABASE}
     ) THEN NULL
     WHEN pg_try_advisory_lock_shared($1::int8) THEN ${tokenUnlessSemaphore("shared")}
   END AS token, pg_backend_pid() AS pid`,
);

/**
 * A semaphore attempt. First it takes the key's presence marker and its
 * limit markers (shared), then it checks who else holds the key: limit-1
 * holders of the key itself (`other` = 1) or semaphore holders with
 * another limit (`other` = theirs); then, only when neither, it tries the
 * slots of $1 one after the other and stops at the first it gets (a
 * recursive query evaluates one slot per step, and a step runs only while
 * nothing was granted, so at most one slot is ever taken), unless another
 * session holds the semaphore's turn $11 $12 (classid, objid): a waiter
 * queued before this request, whom a freed slot is for. Without a slot, it
 * lets its markers go. Each step reads the one before it (materialized),
 * so they run in this order. $1 slot ids, $2 sequence, $3 presence marker,
 * $4 $5 the limit markers, $6 $7 the key's classid and objid, $8 $9 the
 * markers' halves, $10 the request's marked limit.
 */
export const TRY_SLOTS = statement(
  "locks_try_slots",
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
);

/**
 * A blocking wait in the server's lock queue (bounded by the connection's
 * lock_timeout). The materialized CTE is evaluated before the outer row
 * exists, so the token is drawn after the grant, in grant order; `token` is
 * negative as in TRY when semaphore holders hold the key (the lock is given
 * back then). $1 key, $2 sequence, $3 presence marker, $4 $5 limit markers' halves.
 */
export const WAIT: Readonly<Record<LockMode, Statement>> = {
  exclusive: statement(
    "locks_wait",
    `WITH granted AS MATERIALIZED (SELECT pg_advisory_lock($1::int8))
     SELECT ${tokenUnlessSemaphore("exclusive")} AS token FROM granted`,
  ),
  shared: statement(
    "locks_wait_shared",
    `WITH granted AS MATERIALIZED (SELECT pg_advisory_lock_shared($1::int8))
     SELECT ${tokenUnlessSemaphore("shared")} AS token FROM granted`,
  ),
};

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

/**
 * Release, and in the same round trip, wake pollers: a poller holds the
 * key's interest marker ($2) in shared mode while it waits, so the marker
 * cannot be taken exclusively exactly when somebody waits; then (and only
 * then) NOTIFY $3 with the marker as payload ($4). An uncontended release
 * sends no notification. $1 key (or slot).
 */
export const RELEASE: Readonly<Record<LockMode, Statement>> = {
  exclusive: statement(
    "locks_release",
    `SELECT pg_advisory_unlock($1::int8) AS released,
       CASE WHEN pg_try_advisory_lock($2::int8) THEN pg_advisory_unlock($2::int8)
            ELSE pg_notify($3, $4) IS NULL END AS quiet`,
  ),
  shared: statement(
    "locks_release_shared",
    `SELECT pg_advisory_unlock_shared($1::int8) AS released,
       CASE WHEN pg_try_advisory_lock($2::int8) THEN pg_advisory_unlock($2::int8)
            ELSE pg_notify($3, $4) IS NULL END AS quiet`,
  ),
};

/**
 * Releases a semaphore slot ($1) and the holder's presence and limit markers
 * ($5, $6, $7), then wakes pollers as RELEASE does ($2, $3, $4).
 */
export const RELEASE_SLOT = statement(
  "locks_release_slot",
  `SELECT pg_advisory_unlock($1::int8) AS released,
     pg_advisory_unlock_shared($5::int8) AS unmarked_p,
     pg_advisory_unlock_shared($6::int8) AS unmarked_a,
     pg_advisory_unlock_shared($7::int8) AS unmarked_b,
     CASE WHEN pg_try_advisory_lock($2::int8) THEN pg_advisory_unlock($2::int8)
          ELSE pg_notify($3, $4) IS NULL END AS quiet`,
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

/**
 * Who holds a key in this database: a row per session holding the key itself
 * (limit 1: `mode`, `pid`), and a row per limit its semaphore holders use
 * (`lim`, with `sessions` holding its markers). $1 classid, $2 objid,
 * $3 $4 the limit markers' halves.
 */
export const HOLDERS = statement(
  "locks_holders",
  `SELECT mode, pid, NULL::int8 AS lim, NULL::int8 AS sessions FROM pg_locks
   WHERE locktype = 'advisory' AND granted AND objsubid = 1
     AND classid = $1::oid AND objid = $2::oid AND database = ${THIS_DATABASE}
   UNION ALL
   SELECT NULL, NULL, objid::int8, count(DISTINCT pid) FILTER (WHERE classid = $3::oid) FROM pg_locks
   WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = 'ShareLock'
     AND classid IN ($3::oid, $4::oid) AND database = ${THIS_DATABASE}
   GROUP BY objid HAVING count(DISTINCT classid) = 2`,
);

/** How many of the slots ($1 classids, $2 objids) are held in this database. */
export const SLOT_HOLDERS = statement(
  "locks_slot_holders",
  `SELECT count(*)::int AS held FROM pg_locks
   WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND mode = 'ExclusiveLock'
     AND database = ${THIS_DATABASE}
     AND (classid, objid) IN (SELECT * FROM unnest($1::oid[], $2::oid[]))`,
);

/** The token for a grant that raced a cancel (rare). $1 sequence. */
export const NEXT_TOKEN = statement("locks_next_token", "SELECT nextval($1::regclass) AS token");

/** Clears whatever a queue connection may hold after a failed wait; it holds nothing else. */
export const UNLOCK_ALL = statement("locks_unlock_all", "SELECT pg_advisory_unlock_all()");

/** Interrupts a waiting queue connection. $1 its backend pid. */
export const CANCEL = statement("locks_cancel", "SELECT pg_cancel_backend($1::int) AS sent");

/** Keeps a lock-holding session busy and proves it answers. */
export const HEARTBEAT = statement("locks_heartbeat", "SELECT 1");

/** First statement on a connection: its pid, and whether the sequence exists ($1). */
export const PID = "SELECT pg_backend_pid() AS pid, to_regclass($1) IS NOT NULL AS has_sequence";

/**
 * Connection setup, after the sequence exists: the pid again (it must be the
 * same), and lock_timeout for waits ($1; NULL leaves a given client's own).
 */
export const SETUP =
  "SELECT pg_backend_pid() AS pid, set_config('lock_timeout', COALESCE($1, current_setting('lock_timeout')), false) AS lock_timeout";

/** pg_locks' names of the two modes. */
export const LOCK_MODE_NAME: Readonly<Record<LockMode, string>> = {
  exclusive: "ExclusiveLock",
  shared: "ShareLock",
};
