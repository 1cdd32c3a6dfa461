/**
 * The time bounds of this package, in one place with the reasons for them
 * (the README and docs/backends/redis.md explain them to users).
 *
 * Measured on a shared 2-core machine at load average 13 (other test suites
 * running): the first grant of a fresh backend (connect, ready check, SCRIPT
 * LOAD, acquire) took at most 96 ms on one server (300 runs, p99 63 ms),
 * 114 ms on a 3-master Cluster (60 runs) and 109 ms over Redlock with 3
 * members (300 runs); a warm acquire at most 48 ms (10 000 runs, p99.9 29 ms).
 */

/**
 * The shortest `ttlMs` on one server or a Cluster (`capabilities.minTtlMs`).
 * A grant is accepted when its reply is back before `start + ttl - drift`
 * (1% + 2 ms): 250 ms leaves 245 ms for one round trip, over twice the worst
 * first grant measured.
 */
export const SERVER_MIN_TTL_MS = 250;

/**
 * Redlock's default `instanceTimeoutMs` is TTL / 10 within these bounds. The
 * floor is not derived from the TTL: a member that answers in 110 ms on a
 * loaded machine is healthy, and must not be counted as down (a majority of
 * such members would turn a grant into BACKEND_UNAVAILABLE).
 */
export const MIN_INSTANCE_TIMEOUT_MS = 200;
export const MAX_INSTANCE_TIMEOUT_MS = 500;

/**
 * The shortest `ttlMs` over Redlock. An attempt takes up to two rounds to
 * the members (acquire, then the fencing write-back to members whose counter
 * lags), each bounded by the instance timeout: 2 × 200 ms plus the drift
 * allowance (7 ms) fits in 500 ms, so a grant by members that answer within
 * their timeout is always accepted.
 */
export const REDLOCK_MIN_TTL_MS = 500;
