/*
 * A backend whose every answer the test decides: each test overrides the
 * methods it is about and records what the core asked for.
 */
import type { Attempt, Backend, LockRequest, LossReport } from "../src/index.js";

/** A backend whose every answer the test decides. */
export type Scripted = Backend & {
  requests: LockRequest[];
  released: LockRequest[];
  loss?: (report: LossReport) => void;
};

export function scripted(overrides: Partial<Backend> = {}): Scripted {
  let token = 0n;
  const backend: Scripted = {
    name: "scripted",
    capabilities: Object.freeze({
      scope: "process",
      ttl: true,
      fencing: true,
      shared: false,
      semaphore: false,
      fair: false,
      notify: false,
    }),
    requests: [],
    released: [],
    async tryAcquire(req): Promise<Attempt> {
      backend.requests.push(req);
      return { granted: true, fencingToken: ++token };
    },
    async extend() {
      return true;
    },
    async release(req) {
      backend.released.push(req);
    },
    onLoss(listener) {
      backend.loss = listener;
      return () => {
        backend.loss = undefined;
      };
    },
    async close() {},
    ...overrides,
  };
  return backend;
}

export function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true }),
  );
}
