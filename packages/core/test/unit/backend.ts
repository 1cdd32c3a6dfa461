/*
 * A small in-process backend for the core's unit tests: exclusive locks in a
 * Map, increasing tokens, and a record of every call the core made. A test
 * overrides the methods (or the capabilities) its case is about.
 */
import type { Attempt, Backend, Capabilities, LockRequest, LossReport } from "../../src/index.js";

/** The backend plus what the core asked of it. */
export interface Recorded extends Backend {
  /** Every tryAcquire request, in order. */
  readonly tried: LockRequest[];
  /** Every extend call with the TTL asked for. */
  readonly extended: Array<{ readonly request: LockRequest; readonly ttlMs: number }>;
  /** Every release request, in order. */
  readonly released: LockRequest[];
  /** Owner of each held key, by key. */
  readonly holders: Map<string, string>;
  /** How many times close() was called. */
  closed: number;
  /** The core's loss listener, while it listens. */
  loss: ((report: LossReport) => void) | undefined;
  /** How many times the core stopped listening for losses. */
  lossWatchStopped: number;
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
    holders: new Map(),
    closed: 0,
    loss: undefined,
    lossWatchStopped: 0,
    async tryAcquire(request): Promise<Attempt> {
      backend.tried.push(request);
      if (backend.holders.has(request.key)) return { granted: false };
      backend.holders.set(request.key, request.owner);
      return { granted: true, fencingToken: ++token };
    },
    async extend(request, ttlMs) {
      backend.extended.push({ request, ttlMs });
      return backend.holders.get(request.key) === request.owner;
    },
    async release(request) {
      backend.released.push(request);
      if (backend.holders.get(request.key) === request.owner) backend.holders.delete(request.key);
    },
    onLoss(listener) {
      backend.loss = listener;
      return () => {
        backend.loss = undefined;
        backend.lossWatchStopped++;
      };
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
