import type { KeyStatus, LockMode } from "./backend.js";

/**
 * One holder of a key (`Locks.inspect`).
 *
 * @group Who holds it
 */
export interface LockHolder {
  /** The label the holder acquired with (the `holder` option), or undefined when it gave none. */
  readonly holder: string | undefined;
  /** A semaphore's holders are "exclusive"; see `LockState.limit`. */
  readonly mode: LockMode;
  /** The holder's fencing token (0n on a backend without fencing). */
  readonly fencingToken: bigint;
  /**
   * When the store frees the lock unless the holder extends it (epoch ms,
   * by this machine's clock); undefined on a backend without TTL (postgres).
   */
  readonly expiresAt: number | undefined;
}

/**
 * Who holds a key now (`Locks.inspect`).
 *
 * @group Who holds it
 */
export interface LockState {
  /** The key as given, without the namespace. */
  readonly key: string;
  /** Every live holder, lowest fencing token first; empty when the key is free. */
  readonly holders: readonly LockHolder[];
  /** A semaphore's limit (above 1), the one its holders took it with; absent otherwise. */
  readonly limit?: number;
}

/** A backend's report as users see it: expiries as epoch times, holders in grant order. */
export function lockState(key: string, status: KeyStatus): LockState {
  const now = Date.now();
  const holders = status.holders
    .map(
      (h): LockHolder => ({
        holder: h.holder,
        mode: h.mode,
        fencingToken: h.fencingToken,
        expiresAt: h.expiresInMs === undefined ? undefined : now + h.expiresInMs,
      }),
    )
    .sort((a, b) =>
      a.fencingToken < b.fencingToken ? -1 : a.fencingToken > b.fencingToken ? 1 : 0,
    );
  const limit = holders.length > 0 ? status.limit : undefined;
  return limit !== undefined && limit > 1 ? { key, holders, limit } : { key, holders };
}
