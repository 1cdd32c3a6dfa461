import type { Capabilities, Grant, LockRequest } from "./backend.js";
import { driftAllowance, monotonicNow } from "./clock.js";

/** A grant the core accepted, and the monotonic instant its lease is presumed lost. */
export interface AcceptedGrant {
  readonly grant: Grant;
  readonly deadline: number;
}

/**
 * The deadline of a grant, or undefined when the reply came back too late to
 * trust (the Redis docs' validity time): the caller releases it.
 */
export function acceptGrant(
  capabilities: Capabilities,
  request: LockRequest,
  grant: Grant,
  start: number,
  queued = false,
): number | undefined {
  if (!capabilities.ttl) return Number.POSITIVE_INFINITY;
  let deadline = start + request.ttlMs - driftAllowance(request.ttlMs);
  // A grant from the store's queue may come long after the wait began: only the backend
  // knows when its lease started. Without `validUntil` it is dated from the wait's start.
  const known = grant.validUntil;
  if (known !== undefined && (queued || known < deadline)) deadline = known;
  return monotonicNow() < deadline ? deadline : undefined;
}
