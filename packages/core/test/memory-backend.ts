/*
 * A complete in-memory backend used to test the core and the conformance
 * suite itself, written as a model of backend contract 2: the store (this
 * module's `store`: keys, their holders and queues, a token counter, release
 * notifications) and a backend that is only its protocol. Each holder's state
 * is the hold the backend hands the core, so there is no owner map; an
 * expired holder is dropped when the store next looks at the key (the core
 * releases the leases it declares lost, so the backend arms no TTL timer);
 * waits go through the core (subscribe, with a `WakeRegistry`) or the
 * store's own FIFO queue.
 *
 * Each fault flag breaks one promise on purpose: the suite must notice every
 * one of them (see broken-backends.test.ts).
 */
import type { Backend, Capabilities, KeyStatus, LockMode } from "../src/index.js";
import {
  driftAllowance,
  type Grant,
  type KeyRef,
  type LockRequest,
  limitMismatch,
  monotonicNow,
  onAbort,
  scopedKey,
  WakeRegistry,
} from "../src/toolkit/index.js";

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
  /**
   * extend() trusts its own record (the hold it handed out), not the store:
   * it refreshes whoever holds the key now and says true, after a takeover too.
   */
  readonly staleOwnerMap?: boolean;
  /** Releasing a semaphore slot or a reader wakes nobody (only a sole exclusive holder's release does); no queue. */
  readonly semaphoreSilent?: boolean;
  /** The queue serves semaphore waiters (limit > 1) newest first. */
  readonly lifoSemaphore?: boolean;
  /** Grants a request whose `limit` differs from the one the key's holders use. */
  readonly noLimitCheck?: boolean;
  /** inspect() lists every holder as "exclusive" and reports no limit. */
  readonly inspectNoLimit?: boolean;
  /** inspect() reports no holder labels. */
  readonly inspectNoLabels?: boolean;
  /** forceRelease() frees the key but the next grant reuses the evicted holder's token. */
  readonly forceReleaseReusesToken?: boolean;
  /** forceRelease() frees the key, yet the evicted hold's extend() still says true. */
  readonly forceReleaseKeepsHold?: boolean;
}

/** One holder of a key: the store's record of it, and the hold the core passes back. */
interface MemoryHold {
  readonly state: KeyState;
  readonly owner: string;
  readonly holder: string | undefined;
  readonly mode: LockMode;
  readonly limit: number;
  readonly fencingToken: bigint;
  expiresAt: number;
}

interface Waiter {
  readonly request: LockRequest;
  readonly grant: (grant: Grant<MemoryHold>) => void;
}

/** One key of the store. */
interface KeyState {
  readonly id: string;
  readonly holders: Set<MemoryHold>;
  readonly queue: Waiter[];
  /**
   * The store's own clock, armed only while its queue waits behind a holder
   * with a TTL: a server frees an expired key by itself, and its queue must
   * hear of that even if no client calls again.
   */
  expiry?: NodeJS.Timeout;
}

/** The store every instance of this process talks to. */
const store = {
  keys: new Map<string, KeyState>(),
  token: 0n,
  /** Who waits for a release of which key: the store's notifications. */
  wakes: new WakeRegistry(),
  /** Holds a force-release evicted (the `forceReleaseKeepsHold` fault). */
  evicted: new WeakSet<MemoryHold>(),
};

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

  const nextToken = (): bigint => (faults.localTokens ? ++localToken : ++store.token);

  const idOf = (namespace: string, key: string): string =>
    scopedKey(namespace, faults.bmpOnlyKeys ? key.replace(/[\u{10000}-\u{10FFFF}]/gu, "?") : key);

  const requestId = (request: KeyRef): string =>
    faults.bmpOnlyKeys ? idOf(request.namespace, request.key) : request.scoped;

  const stateOf = (request: LockRequest): KeyState => {
    const id = requestId(request);
    let state = store.keys.get(id);
    if (state === undefined) {
      state = { id, holders: new Set(), queue: [] };
      store.keys.set(id, state);
    }
    return state;
  };

  const forget = (state: KeyState): void => {
    if (state.holders.size > 0 || state.queue.length > 0) return;
    if (state.expiry) clearTimeout(state.expiry);
    if (store.keys.get(state.id) === state) store.keys.delete(state.id);
  };

  /** Drops the holders whose TTL ran out: the store's expiry, looked at lazily. */
  const purge = (state: KeyState): void => {
    if (faults.ttlNeverExpires) return;
    const now = monotonicNow();
    for (const hold of state.holders) if (hold.expiresAt <= now) state.holders.delete(hold);
  };

  /** When the first holder's TTL runs out, in ms from now, or undefined if none will. */
  const firstExpiry = (state: KeyState): number | undefined => {
    let first = Number.POSITIVE_INFINITY;
    for (const hold of state.holders) first = Math.min(first, hold.expiresAt);
    const left = first - monotonicNow();
    return Number.isFinite(left) && left > 0 ? left : undefined;
  };

  const armExpiry = (state: KeyState): void => {
    if (state.expiry) clearTimeout(state.expiry);
    state.expiry = undefined;
    const left = firstExpiry(state);
    if (state.queue.length === 0 || faults.ttlNeverExpires || left === undefined) return;
    state.expiry = setTimeout(() => changed(state), left + 1);
    state.expiry.unref();
  };

  /** The limit the key's current holders use, if any hold it. */
  const currentLimit = (state: KeyState): number | undefined => {
    purge(state);
    for (const hold of state.holders) return hold.limit;
    return undefined;
  };

  const checkLimit = (state: KeyState, request: LockRequest): void => {
    const current = currentLimit(state);
    if (!faults.noLimitCheck && current !== undefined && current !== request.limit)
      throw limitMismatch(request.limit, current);
  };

  const compatible = (state: KeyState, request: LockRequest): boolean => {
    purge(state);
    if (state.holders.size === 0) return true;
    const modes = [...state.holders].map((h) => h.mode);
    if (request.mode === "shared") return modes.every((m) => m === "shared");
    return modes.every((m) => m === "exclusive") && state.holders.size < request.limit;
  };

  const storedTtl = (ttlMs: number): number => (faults.truncatedTtl ? (ttlMs * 4) / 5 : ttlMs);

  const take = (state: KeyState, request: LockRequest): MemoryHold => {
    const hold: MemoryHold = {
      state,
      owner: request.owner,
      holder: request.holder,
      mode: request.mode,
      limit: request.limit,
      fencingToken: nextToken(),
      expiresAt: monotonicNow() + storedTtl(request.ttlMs),
    };
    state.holders.add(hold);
    return hold;
  };

  /** The waiter the queue serves next. */
  const headOf = (queue: readonly Waiter[]): Waiter => {
    const newest = queue[queue.length - 1]!;
    if (faults.lifo || (faults.lifoSemaphore && newest.request.limit > 1)) return newest;
    return queue[0]!;
  };

  /** The key may have become free: serve the queue, notify the subscribers. */
  const changed = (state: KeyState): void => {
    purge(state);
    // Strict FIFO: serve the head while it fits, stop at the first that does not.
    while (state.queue.length > 0) {
      const head = headOf(state.queue);
      if (!compatible(state, head.request)) break;
      state.queue.splice(state.queue.indexOf(head), 1);
      const hold = take(state, head.request);
      const ttlMs = head.request.ttlMs;
      // The lease started now: it is sure until the TTL minus the drift allowance.
      const validUntil =
        monotonicNow() + ttlMs - (faults.validUntilNoDrift ? 0 : driftAllowance(ttlMs));
      head.grant({ granted: true, fencingToken: hold.fencingToken, validUntil, hold });
    }
    if (!faults.silent) store.wakes.wake(state.id);
    armExpiry(state);
    forget(state);
  };

  const backend: Backend<MemoryHold> = {
    name: "memory",
    capabilities,

    async tryAcquire(request) {
      if (faults.leakyTimer) leakedTimers.add(setTimeout(() => undefined, 8_000));
      if (faults.slowReplies) await new Promise((resolve) => setTimeout(resolve, 15));
      const state = stateOf(request);
      tryCalls++;
      const cheat = faults.flakyTry === true && tryCalls % 5 === 0;
      if (!cheat) checkLimit(state, request);
      if (cheat || (state.queue.length === 0 && compatible(state, request))) {
        const hold = take(state, request);
        return { granted: true, fencingToken: hold.fencingToken, hold };
      }
      // A hint for the core's polling: when the first holder's TTL runs out.
      const retryAfterMs = firstExpiry(state);
      forget(state);
      return retryAfterMs === undefined ? { granted: false } : { granted: false, retryAfterMs };
    },

    acquire(request, wait) {
      const state = stateOf(request);
      try {
        wait.signal.throwIfAborted();
        checkLimit(state, request);
      } catch (error) {
        forget(state);
        return Promise.reject(error);
      }
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          request,
          grant: (grant) => {
            stop();
            resolve(grant);
          },
        };
        const stop = faults.ignoresAbort
          ? () => {}
          : onAbort(wait.signal, (reason) => {
              const index = state.queue.indexOf(waiter);
              if (index >= 0) state.queue.splice(index, 1);
              changed(state);
              reject(reason);
            });
        state.queue.push(waiter);
        changed(state);
      });
    },

    async extend(request, hold, ttlMs) {
      if (faults.staleOwnerMap) {
        // "We granted it, so we hold it": refreshes whoever holds the key now.
        const state = stateOf(request);
        for (const holder of state.holders) holder.expiresAt = monotonicNow() + storedTtl(ttlMs);
        armExpiry(state);
        forget(state);
        return true;
      }
      const { state } = hold;
      purge(state);
      if (faults.forceReleaseKeepsHold && store.evicted.has(hold)) return true;
      if (!state.holders.has(hold)) {
        forget(state);
        return false;
      }
      hold.expiresAt = monotonicNow() + storedTtl(ttlMs);
      armExpiry(state);
      return true;
    },

    async release(request, hold) {
      const state = hold?.state ?? stateOf(request);
      if (faults.noOwnerCheck) state.holders.clear();
      else if (hold !== undefined) state.holders.delete(hold);
      else for (const h of state.holders) if (h.owner === request.owner) state.holders.delete(h);
      if (faults.semaphoreSilent && (request.limit > 1 || request.mode === "shared")) {
        // The slot is free, but only the release of a sole exclusive holder notifies.
        forget(state);
        return;
      }
      changed(state);
    },

    subscribe(request, onChange) {
      const id = requestId(request);
      if (faults.lateSubscribe) {
        // The subscription becomes active only when the store's reply comes back.
        let remove: (() => void) | undefined;
        const pending = setTimeout(() => {
          remove = store.wakes.add(id, { wake: onChange });
        }, 100);
        return () => {
          clearTimeout(pending);
          remove?.();
        };
      }
      return store.wakes.add(id, { wake: onChange });
    },

    async inspect(key): Promise<KeyStatus> {
      const state = store.keys.get(requestId(key));
      if (state !== undefined) purge(state);
      const holders = state === undefined ? [] : [...state.holders];
      const now = monotonicNow();
      return {
        ...(holders.length > 0 && !faults.inspectNoLimit ? { limit: holders[0]!.limit } : {}),
        holders: holders.map((hold) => ({
          holder: faults.inspectNoLabels ? undefined : hold.holder,
          owner: hold.owner,
          mode: faults.inspectNoLimit ? "exclusive" : hold.mode,
          fencingToken: hold.fencingToken,
          expiresInMs: Math.max(0, hold.expiresAt - now),
        })),
      };
    },

    async forceRelease(key) {
      const state = store.keys.get(requestId(key));
      if (state !== undefined) purge(state);
      if (state === undefined || state.holders.size === 0) return false;
      if (faults.forceReleaseReusesToken) store.token -= BigInt(state.holders.size);
      if (faults.forceReleaseKeepsHold) for (const hold of state.holders) store.evicted.add(hold);
      state.holders.clear();
      changed(state);
      return true;
    },

    // Nothing to close: the store outlives its clients, and no instance opens a timer or socket.
    async close() {},
  };
  if (noQueue) delete backend.acquire;
  return backend as Backend;
}
