/*
 * A small in-process backend for the core's unit tests: exclusive locks in a
 * Map, increasing tokens, a hold per grant, and a record of every call the
 * core made. A test overrides the methods (or the capabilities) its case is about.
 */
import type { Backend, Capabilities } from "../../src/index.js";
import type { Attempt, BackendHost, LockRequest } from "../../src/toolkit/index.js";

/** The backend's handle on a lock it granted. */
interface UnitHold {
  readonly key: string;
  readonly owner: string;
}

/** The backend plus what the core asked of it. */
export interface Recorded extends Backend {
  /** Every tryAcquire request, in order. */
  readonly tried: LockRequest[];
  /** Every extend call with the hold and the TTL asked for. */
  readonly extended: Array<{
    readonly request: LockRequest;
    readonly hold: unknown;
    readonly ttlMs: number;
  }>;
  /** Every release request, in order. */
  readonly released: LockRequest[];
  /** The hold of each release, in the same order (undefined: clean up by owner). */
  readonly releasedHolds: unknown[];
  /** The hold of each held key, by key. */
  readonly holders: Map<string, UnitHold>;
  /** How many times close() was called. */
  closed: number;
  /** What the core gave bind(): the way to report losses. */
  host: BackendHost | undefined;
}

const defaults: Capabilities = {
  scope: "process",
  ttl: true,
  fencing: true,
  shared: false,
  semaphore: false,
  fair: false,
  notify: false,
};

export function recorded(
  overrides: Partial<Backend> = {},
  capabilities: Partial<Capabilities> = {},
): Recorded {
  let token = 0n;
  const backend: Recorded = {
    name: "unit",
    capabilities: Object.freeze({ ...defaults, ...capabilities }),
    tried: [],
    extended: [],
    released: [],
    releasedHolds: [],
    holders: new Map(),
    closed: 0,
    host: undefined,
    bind(host) {
      backend.host = host;
    },
    async tryAcquire(request): Promise<Attempt> {
      backend.tried.push(request);
      if (backend.holders.has(request.key)) return { granted: false };
      const hold: UnitHold = { key: request.key, owner: request.owner };
      backend.holders.set(request.key, hold);
      return { granted: true, fencingToken: ++token, hold };
    },
    async extend(request, hold, ttlMs) {
      backend.extended.push({ request, hold, ttlMs });
      return hold !== undefined && backend.holders.get(request.key) === hold;
    },
    async release(request, hold) {
      backend.released.push(request);
      backend.releasedHolds.push(hold);
      const current = backend.holders.get(request.key);
      const mine = hold === undefined ? current?.owner === request.owner : current === hold;
      if (mine) backend.holders.delete(request.key);
    },
    async close() {
      backend.closed++;
    },
    ...overrides,
  };
  return backend;
}

/** Resolves with `signal.reason` once it aborts. */
export function abortReason(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true }),
  );
}

/** Waits until `condition()` holds, polling, or fails after `ms`. */
export async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** A promise that never settles: a store that stopped answering. */
export function never<T>(): Promise<T> {
  return new Promise<T>(() => {});
}

/** The code of the error a promise rejects with, or "resolved". */
export async function codeOf(outcome: Promise<unknown>): Promise<string | undefined> {
  try {
    await outcome;
    return "resolved";
  } catch (error) {
    return (error as { code?: string }).code;
  }
}

/**
 * Now, in epoch ms, on the clock `Lease.expiresAt` uses (the monotonic
 * clock's epoch view): `Date.now()` drifts from it by a millisecond or more.
 */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}
