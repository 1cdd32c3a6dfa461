/*
 * A complete in-memory backend used to test the core and the conformance
 * suite itself. Each flag breaks one promise on purpose: the suite must
 * notice every one of them (see broken-backends.test.ts).
 */
import type {
  Attempt,
  Backend,
  Capabilities,
  KeyStatus,
  LockRequest,
  Unsubscribe,
  WaitOptions,
} from "../src/index.js";
import { driftAllowance, limitMismatch, monotonicNow, scopedKey } from "../src/index.js";

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
  /** Stores keys as MySQL's 3-byte "utf8" would: every character outside the BMP becomes "?". */
  readonly bmpOnlyKeys?: boolean;
  /** Declares a `minTtlMs` below the core's own floor. */
  readonly floorTooLow?: boolean;
  /** Every tryAcquire answers 15 ms late, yet the backend declares no `minTtlMs` to match. */
  readonly slowReplies?: boolean;
  /** tryAcquire arms a reply-timeout timer it never clears, not even in close(). */
  readonly leakyTimer?: boolean;
  /** subscribe() resolves before its listener is active (a SUBSCRIBE whose reply is not awaited); no queue. */
  readonly lateSubscribe?: boolean;
  /** The store keeps a lock for 4/5 of its TTL (a TTL rounded down to a coarser unit). */
  readonly truncatedTtl?: boolean;
  /** A grant from the queue reports `validUntil` = grant + TTL, with no clock-drift allowance. */
  readonly validUntilNoDrift?: boolean;
  /** extend() trusts a local record of the owners it granted, not the store: true after a takeover. */
  readonly staleOwnerMap?: boolean;
  /** Releasing a semaphore slot or a reader wakes nobody (only a sole exclusive holder's release does); no queue. */
  readonly semaphoreSilent?: boolean;
  /** The queue serves semaphore waiters (limit > 1) newest first. */
  readonly lifoSemaphore?: boolean;
  /** Grants a request whose `limit` differs from the one the key's holders use. */
  readonly noLimitCheck?: boolean;
  /** inspect() lists every holder as "exclusive" and reports no limit. */
  readonly inspectNoLimit?: boolean;
}

interface Holder {
  readonly mode: "exclusive" | "shared";
  readonly limit: number;
  readonly fencingToken: bigint;
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
/** Timers the leakyTimer fault armed, so that a broken suite file can stop them at its end. */
const leakedTimers = new Set<NodeJS.Timeout>();

/** Stops the timers the `leakyTimer` fault left armed (for the broken suite's teardown). */
export function stopLeakedTimers(): void {
  for (const timer of leakedTimers) clearTimeout(timer);
  leakedTimers.clear();
}

/** How an honest memory backend is set up. */
export interface MemoryOptions {
  /**
   * Keep a FIFO queue of waiters and offer the blocking `acquire` (default
   * true). Without it, waiters poll and are woken by `subscribe`: the core's
   * other way of waiting, and claims no fairness.
   */
  readonly queue?: boolean;
}

export function memoryBackend(faults: Faults = {}, options: MemoryOptions = {}): Backend {
  let localToken = 0n;
  let tryCalls = 0;
  // These faults are about the poll-and-notify way of waiting.
  const noQueue =
    options.queue === false ||
    faults.silent === true ||
    faults.lateSubscribe === true ||
    faults.semaphoreSilent === true;
  const grantedHere = new Set<string>();
  const capabilities: Capabilities = Object.freeze({
    scope: "process",
    ttl: true,
    fencing: true,
    shared: true,
    semaphore: true,
    fair: !noQueue,
    notify: true,
    ...(faults.floorTooLow ? { minTtlMs: 5 } : {}),
  });

  const nextToken = (): bigint => (faults.localTokens ? ++localToken : ++sharedToken);

  const idOf = (namespace: string, key: string): string =>
    scopedKey(namespace, faults.bmpOnlyKeys ? key.replace(/[\u{10000}-\u{10FFFF}]/gu, "?") : key);

  const stateOf = (req: LockRequest): KeyState => {
    const id = idOf(req.namespace, req.key);
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
      keys.delete(idOf(req.namespace, req.key));
    }
  };

  const purge = (state: KeyState): void => {
    if (faults.ttlNeverExpires) return;
    const now = monotonicNow();
    for (const [owner, holder] of state.holders)
      if (holder.expiresAt <= now) state.holders.delete(owner);
  };

  /** The limit the key's current holders use, if any hold it. */
  const currentLimit = (state: KeyState): number | undefined => {
    purge(state);
    for (const holder of state.holders.values()) return holder.limit;
    return undefined;
  };

  const checkLimit = (state: KeyState, req: LockRequest): void => {
    const current = currentLimit(state);
    if (!faults.noLimitCheck && current !== undefined && current !== req.limit)
      throw limitMismatch(req.limit, current);
  };

  const compatible = (state: KeyState, req: LockRequest): boolean => {
    purge(state);
    if (state.holders.size === 0) return true;
    const modes = [...state.holders.values()].map((h) => h.mode);
    if (req.mode === "shared") return modes.every((m) => m === "shared");
    return modes.every((m) => m === "exclusive") && state.holders.size < req.limit;
  };

  const storedTtl = (ttlMs: number): number => (faults.truncatedTtl ? (ttlMs * 4) / 5 : ttlMs);

  const take = (state: KeyState, req: LockRequest): Attempt & { granted: true } => {
    const fencingToken = nextToken();
    state.holders.set(req.owner, {
      mode: req.mode,
      limit: req.limit,
      fencingToken,
      expiresAt: monotonicNow() + storedTtl(req.ttlMs),
    });
    grantedHere.add(req.owner);
    scheduleExpiry(state, req);
    return { granted: true, fencingToken };
  };

  const scheduleExpiry = (state: KeyState, req: LockRequest): void => {
    if (faults.ttlNeverExpires) return;
    if (state.timer) clearTimeout(state.timer);
    const next = Math.min(...[...state.holders.values()].map((h) => h.expiresAt));
    if (!Number.isFinite(next)) return;
    state.timer = setTimeout(() => changed(state, req), Math.max(0, next - monotonicNow()) + 1);
    state.timer.unref();
  };

  /** The waiter the queue serves next. */
  const headOf = (queue: readonly Waiter[]): Waiter => {
    const newest = queue[queue.length - 1]!;
    if (faults.lifo || (faults.lifoSemaphore && newest.request.limit > 1)) return newest;
    return queue[0]!;
  };

  const changed = (state: KeyState, req: LockRequest): void => {
    purge(state);
    // Strict FIFO: serve the head while it fits, stop at the first that does not.
    while (state.queue.length > 0) {
      const head = headOf(state.queue);
      if (!compatible(state, head.request)) break;
      state.queue.splice(state.queue.indexOf(head), 1);
      const attempt = take(state, head.request);
      const ttlMs = head.request.ttlMs;
      // The lease started now: it is sure until the TTL minus the drift allowance.
      const validUntil =
        monotonicNow() + ttlMs - (faults.validUntilNoDrift ? 0 : driftAllowance(ttlMs));
      head.grant({ ...attempt, validUntil });
    }
    if (!faults.silent) for (const listener of [...state.listeners]) listener();
    if (state.holders.size > 0) scheduleExpiry(state, req);
    forget(req, state);
  };

  const backend: Backend = {
    name: "memory",
    capabilities,

    async tryAcquire(req) {
      if (faults.leakyTimer) leakedTimers.add(setTimeout(() => undefined, 8_000));
      if (faults.slowReplies) await new Promise((resolve) => setTimeout(resolve, 15));
      const state = stateOf(req);
      tryCalls++;
      const cheat = faults.flakyTry === true && tryCalls % 5 === 0;
      if (!cheat) checkLimit(state, req);
      if (cheat || (state.queue.length === 0 && compatible(state, req))) return take(state, req);
      forget(req, state);
      return { granted: false };
    },

    acquire(req: LockRequest, wait: WaitOptions) {
      const state = stateOf(req);
      return new Promise((resolve, reject) => {
        try {
          checkLimit(state, req);
        } catch (error) {
          forget(req, state);
          reject(error);
          return;
        }
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
      if (faults.staleOwnerMap && grantedHere.has(req.owner)) {
        // "We granted it, so we hold it": refreshes whoever holds the key now.
        for (const holder of state.holders.values())
          holder.expiresAt = monotonicNow() + storedTtl(ttlMs);
        scheduleExpiry(state, req);
        forget(req, state);
        return true;
      }
      const holder = state.holders.get(req.owner);
      if (holder === undefined) {
        forget(req, state);
        return false;
      }
      holder.expiresAt = monotonicNow() + storedTtl(ttlMs);
      scheduleExpiry(state, req);
      return true;
    },

    async release(req) {
      const state = stateOf(req);
      grantedHere.delete(req.owner);
      if (faults.noOwnerCheck) state.holders.clear();
      else state.holders.delete(req.owner);
      if (faults.semaphoreSilent && (req.limit > 1 || req.mode === "shared")) {
        // The slot is free, but only the release of a sole exclusive holder notifies.
        forget(req, state);
        return;
      }
      changed(state, req);
    },

    subscribe(req, onChange): Unsubscribe {
      const state = stateOf(req);
      if (faults.lateSubscribe) {
        // The subscription becomes active only when the store's reply comes back.
        const pending = setTimeout(() => state.listeners.add(onChange), 100);
        return () => {
          clearTimeout(pending);
          state.listeners.delete(onChange);
          forget(req, state);
        };
      }
      state.listeners.add(onChange);
      return () => {
        state.listeners.delete(onChange);
        forget(req, state);
      };
    },

    async inspect(namespace, key): Promise<KeyStatus> {
      const state = keys.get(idOf(namespace, key));
      if (state !== undefined) purge(state);
      const holders = state === undefined ? [] : [...state.holders];
      const now = monotonicNow();
      return {
        held: holders.length > 0,
        ...(holders.length > 0 && !faults.inspectNoLimit ? { limit: holders[0]![1].limit } : {}),
        holders: holders.map(([owner, holder]) => ({
          owner,
          mode: faults.inspectNoLimit ? "exclusive" : holder.mode,
          fencingToken: holder.fencingToken,
          expiresInMs: Math.max(0, holder.expiresAt - now),
        })),
      };
    },

    async close() {},
  };
  if (noQueue) delete backend.acquire;
  return backend;
}
