/*
 * A complete in-memory backend used to test the core and the conformance
 * suite itself. Each flag breaks one promise on purpose: the suite must
 * notice every one of them (see broken-backends.test.ts).
 */
import type {
  Attempt,
  Backend,
  Capabilities,
  LockRequest,
  Unsubscribe,
  WaitOptions,
} from "../src/index.js";
import { monotonicNow, scopedKey } from "../src/index.js";

export interface Faults {
  /** release() frees the key whoever asks. */
  readonly noOwnerCheck?: boolean;
  /** tryAcquire grants a held key every few calls. */
  readonly flakyTry?: boolean;
  /** Each instance counts tokens on its own, so tokens go back across instances. */
  readonly localTokens?: boolean;
  /** Claims ttl but never frees an abandoned lock. */
  readonly ttlNeverExpires?: boolean;
  /** The blocking acquire ignores its abort signal. */
  readonly ignoresAbort?: boolean;
  /** Claims fair but serves the newest waiter first. */
  readonly lifo?: boolean;
  /** Claims notify but never notifies (and, having no queue of its own, claims no fairness). */
  readonly silent?: boolean;
}

interface Holder {
  readonly mode: "exclusive" | "shared";
  expiresAt: number;
}

interface Waiter {
  readonly request: LockRequest;
  readonly grant: (attempt: Attempt & { granted: true }) => void;
}

interface KeyState {
  readonly holders: Map<string, Holder>;
  readonly queue: Waiter[];
  readonly listeners: Set<() => void>;
  timer?: NodeJS.Timeout;
}

const keys = new Map<string, KeyState>();
let sharedToken = 0n;

export function memoryBackend(faults: Faults = {}): Backend {
  let localToken = 0n;
  let tryCalls = 0;
  const capabilities: Capabilities = Object.freeze({
    scope: "process",
    ttl: true,
    fencing: true,
    shared: true,
    semaphore: true,
    fair: !faults.silent,
    notify: true,
  });

  const nextToken = (): bigint => (faults.localTokens ? ++localToken : ++sharedToken);

  const stateOf = (req: LockRequest): KeyState => {
    const id = scopedKey(req.namespace, req.key);
    let state = keys.get(id);
    if (state === undefined) {
      state = { holders: new Map(), queue: [], listeners: new Set() };
      keys.set(id, state);
    }
    return state;
  };

  const forget = (req: LockRequest, state: KeyState): void => {
    if (state.holders.size === 0 && state.queue.length === 0 && state.listeners.size === 0) {
      if (state.timer) clearTimeout(state.timer);
      keys.delete(scopedKey(req.namespace, req.key));
    }
  };

  const purge = (state: KeyState): void => {
    if (faults.ttlNeverExpires) return;
    const now = monotonicNow();
    for (const [owner, holder] of state.holders)
      if (holder.expiresAt <= now) state.holders.delete(owner);
  };

  const compatible = (state: KeyState, req: LockRequest): boolean => {
    purge(state);
    if (state.holders.size === 0) return true;
    const modes = [...state.holders.values()].map((h) => h.mode);
    if (req.mode === "shared") return modes.every((m) => m === "shared");
    return modes.every((m) => m === "exclusive") && state.holders.size < req.limit;
  };

  const take = (state: KeyState, req: LockRequest): Attempt & { granted: true } => {
    state.holders.set(req.owner, { mode: req.mode, expiresAt: monotonicNow() + req.ttlMs });
    scheduleExpiry(state, req);
    return { granted: true, fencingToken: nextToken() };
  };

  const scheduleExpiry = (state: KeyState, req: LockRequest): void => {
    if (faults.ttlNeverExpires) return;
    if (state.timer) clearTimeout(state.timer);
    const next = Math.min(...[...state.holders.values()].map((h) => h.expiresAt));
    if (!Number.isFinite(next)) return;
    state.timer = setTimeout(() => changed(state, req), Math.max(0, next - monotonicNow()) + 1);
    state.timer.unref();
  };

  const changed = (state: KeyState, req: LockRequest): void => {
    purge(state);
    // Strict FIFO: serve the head while it fits, stop at the first that does not.
    while (state.queue.length > 0) {
      const head = faults.lifo ? state.queue[state.queue.length - 1]! : state.queue[0]!;
      if (!compatible(state, head.request)) break;
      state.queue.splice(state.queue.indexOf(head), 1);
      head.grant(take(state, head.request));
    }
    if (!faults.silent) for (const listener of [...state.listeners]) listener();
    if (state.holders.size > 0) scheduleExpiry(state, req);
    forget(req, state);
  };

  const backend: Backend = {
    name: "memory",
    capabilities,

    async tryAcquire(req) {
      const state = stateOf(req);
      tryCalls++;
      const cheat = faults.flakyTry === true && tryCalls % 5 === 0;
      if (cheat || (state.queue.length === 0 && compatible(state, req))) return take(state, req);
      forget(req, state);
      return { granted: false };
    },

    acquire(req: LockRequest, wait: WaitOptions) {
      const state = stateOf(req);
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          request: req,
          grant: (attempt) => {
            wait.signal.removeEventListener("abort", onAbort);
            resolve(attempt);
          },
        };
        const onAbort = (): void => {
          const index = state.queue.indexOf(waiter);
          if (index >= 0) state.queue.splice(index, 1);
          changed(state, req);
          reject(wait.signal.reason);
        };
        state.queue.push(waiter);
        if (!faults.ignoresAbort) wait.signal.addEventListener("abort", onAbort, { once: true });
        changed(state, req);
      });
    },

    async extend(req, ttlMs) {
      const state = stateOf(req);
      purge(state);
      const holder = state.holders.get(req.owner);
      if (holder === undefined) {
        forget(req, state);
        return false;
      }
      holder.expiresAt = monotonicNow() + ttlMs;
      scheduleExpiry(state, req);
      return true;
    },

    async release(req) {
      const state = stateOf(req);
      if (faults.noOwnerCheck) state.holders.clear();
      else state.holders.delete(req.owner);
      changed(state, req);
    },

    subscribe(req, onChange): Unsubscribe {
      const state = stateOf(req);
      state.listeners.add(onChange);
      return () => {
        state.listeners.delete(onChange);
        forget(req, state);
      };
    },

    async close() {},
  };
  if (faults.silent) delete backend.acquire;
  return backend;
}
