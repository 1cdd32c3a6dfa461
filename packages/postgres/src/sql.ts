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

/**
 * One attempt, one round trip: the token comes from the sequence in the same
 * statement, and only when the lock was granted (CASE evaluates its
 * condition first). `pid` detects a connection swapped under us (a
 * transaction-mode pooler). $1 key, $2 sequence.
 */
export const TRY: Readonly<Record<LockMode, Statement>> = {
  exclusive: statement(
    "locks_try",
    "SELECT CASE WHEN pg_try_advisory_lock($1::int8) THEN nextval($2::regclass) END AS token, pg_backend_pid() AS pid",
  ),
  shared: statement(
    "locks_try_shared",
    "SELECT CASE WHEN pg_try_advisory_lock_shared($1::int8) THEN nextval($2::regclass) END AS token, pg_backend_pid() AS pid",
  ),
};

/**
 * A second reader on a session that reads the key already: PostgreSQL
 * grants a session what it holds at once, even past a writer queued for the
 * key, so this asks only while nobody waits for the key in this database (a
 * waiter there queues behind a writer, or is one), as the server does for
 * the reader of another session. $1 key, $2 sequence, $3 classid, $4 objid.
 */
export const TRY_READ_AGAIN = statement(
  "locks_try_read_again",
  `SELECT CASE
     WHEN EXISTS (
       SELECT 1 FROM pg_locks
       WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
         AND classid = $3::oid AND objid = $4::oid
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
     ) THEN NULL
     WHEN pg_try_advisory_lock_shared($1::int8) THEN nextval($2::regclass)
   END AS token, pg_backend_pid() AS pid`,
);

/**
 * A semaphore attempt: tries the slots of $1 one after the other and stops
 * at the first it gets. A recursive query evaluates one slot per step, and a
 * step runs only while nothing was granted, so at most one slot is ever
 * taken. Returns no row when every slot is taken. $1 slot ids, $2 sequence.
 */
export const TRY_SLOTS = statement(
  "locks_try_slots",
  `WITH RECURSIVE attempt(i, got) AS (
     SELECT 0, false
     UNION ALL
     SELECT i + 1, pg_try_advisory_lock(($1::int8[])[i + 1])
     FROM attempt
     WHERE NOT got AND i < cardinality($1::int8[])
   )
   SELECT ($1::int8[])[i]::text AS slot, nextval($2::regclass) AS token, pg_backend_pid() AS pid
   FROM attempt WHERE got`,
);

/**
 * A blocking wait in the server's lock queue (bounded by the connection's
 * lock_timeout). The materialized CTE is evaluated before the outer row
 * exists, so the token is drawn after the grant, in grant order.
 * $1 key, $2 sequence.
 */
export const WAIT: Readonly<Record<LockMode, Statement>> = {
  exclusive: statement(
    "locks_wait",
    "WITH granted AS MATERIALIZED (SELECT pg_advisory_lock($1::int8)) SELECT nextval($2::regclass) AS token FROM granted",
  ),
  shared: statement(
    "locks_wait_shared",
    "WITH granted AS MATERIALIZED (SELECT pg_advisory_lock_shared($1::int8)) SELECT nextval($2::regclass) AS token FROM granted",
  ),
};

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

/** Who holds a key in this database. $1 classid, $2 objid. */
export const HOLDERS = statement(
  "locks_holders",
  `SELECT mode, pid FROM pg_locks
   WHERE locktype = 'advisory' AND granted AND objsubid = 1
     AND classid = $1::oid AND objid = $2::oid
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
);

/** The token for a grant that raced a cancel (rare). $1 sequence. */
export const NEXT_TOKEN = statement("locks_next_token", "SELECT nextval($1::regclass) AS token");

/** Clears whatever a queue connection may hold after a failed wait; it holds nothing else. */
export const UNLOCK_ALL = statement("locks_unlock_all", "SELECT pg_advisory_unlock_all()");

/** Interrupts a waiting queue connection. $1 its backend pid. */
export const CANCEL = statement("locks_cancel", "SELECT pg_cancel_backend($1::int) AS sent");

/** Keeps a lock-holding session busy and proves it answers. */
export const HEARTBEAT = statement("locks_heartbeat", "SELECT 1");

/** First statement on a connection; a second `pg_backend_pid()` must give the same pid. */
export const PID = "SELECT pg_backend_pid() AS pid";

/** Connection setup: pid again, lock_timeout for waits ($1), and whether the sequence exists ($2). */
export const SETUP =
  "SELECT pg_backend_pid() AS pid, set_config('lock_timeout', $1, false) AS lock_timeout, to_regclass($2) IS NOT NULL AS has_sequence";

/** pg_locks' names of the two modes. */
export const LOCK_MODE_NAME: Readonly<Record<LockMode, string>> = {
  exclusive: "ExclusiveLock",
  shared: "ShareLock",
};
