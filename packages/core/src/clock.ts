/**
 * Every deadline in the library is measured on the monotonic clock, so a
 * wall-clock jump (NTP step, manual change) can neither shorten nor stretch a
 * lease as the holder sees it.
 *
 * @group Keep-alive
 */
export const monotonicNow: () => number = performance.now.bind(performance);

/**
 * Clock-drift allowance subtracted from every lease, as the Redis docs' validity
 * time does: 1% of the TTL plus 2 ms for timer granularity.
 *
 * @group Keep-alive
 */
export function driftAllowance(ttlMs: number): number {
  return Math.ceil(ttlMs * 0.01) + 2;
}

/** Converts a monotonic instant to epoch milliseconds, for display and `Lease.expiresAt`. */
export function toEpochMs(monotonic: number): number {
  return Math.round(performance.timeOrigin + monotonic);
}
