import {
  type Attempt,
  type Backend,
  type Capabilities,
  type LockRequest,
  lockClosed,
  type WaitOptions,
} from "@locks/core";
import { SEQ, type SharedLockTable, STATE, TableView, WAITERS, WRITERS } from "./table.js";

type Grant = Attempt & { granted: true };

/** A hold of this instance: where it is and how to undo it. */
interface TableHold {
  readonly slot: number;
  readonly shared: boolean;
}

type WaitResult =
  | { readonly async: false; readonly value: "not-equal" | "timed-out" }
  | { readonly async: true; readonly value: Promise<"ok" | "timed-out"> };

/** Atomics.waitAsync (Node 16+, not yet in TypeScript's ES2023 lib). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(array: Int32Array, index: number, value: number, timeoutMs?: number): WaitResult;
  }
).waitAsync;

/**
 * How long a waiter sleeps before it looks again by itself. Wake-ups cannot
 * be lost (a waiter sleeps only while the slot's sequence word still has the
 * value it read before its last attempt), so this is defence in depth; its
 * timer also keeps the thread alive while it waits, which a pending
 * Atomics.waitAsync does not do.
 */
const RECHECK_MS = 1_000;

const NOT_GRANTED: Attempt = Object.freeze({ granted: false });
const DONE: Promise<void> = Promise.resolve();
const TRUE: Promise<boolean> = Promise.resolve(true);
const FALSE: Promise<boolean> = Promise.resolve(false);

const CAPABILITIES: Capabilities = Object.freeze({
  scope: "process",
  ttl: false,
  fencing: true,
  shared: true,
  semaphore: true,
  // Woken waiters race for the slot: grants are not in arrival order.
  fair: false,
  notify: true,
});

/**
 * Locks between the worker_threads of one process, over a shared table.
 * Every change of a slot is one compare-and-swap on its lock word, so threads
 * never take a mutex and the main thread never blocks: waiters sleep with
 * Atomics.waitAsync and releases wake them with Atomics.notify.
 *
 * Owner checks are local: a hold can only end through the instance that took
 * it (there is no TTL on the table), so the instance's own map of holds is
 * the exact record of what an owner token may release.
 */
export class TableBackend implements Backend {
  readonly name = "thread";
  readonly capabilities = CAPABILITIES;
  readonly #table: TableView;
  readonly #words: Int32Array;
  readonly #holds = new Map<string, TableHold>();
  /** Ends the sleep of each of this instance's waiters (for close). */
  readonly #sleepers = new Set<() => void>();
  #closed = false;

  constructor(table: SharedLockTable) {
    this.#table = new TableView(table);
    this.#words = this.#table.words;
  }

  tryAcquire(req: LockRequest): Promise<Attempt> {
    if (this.#closed) return Promise.reject(lockClosed("thread backend"));
    const slot = this.#table.slotOf(req.namespace, req.key);
    const shared = req.mode === "shared";
    if (!this.#take(slot, shared, req.limit)) return Promise.resolve(NOT_GRANTED);
    return Promise.resolve(this.#granted(req, slot, shared));
  }

  async acquire(req: LockRequest, wait: WaitOptions): Promise<Grant> {
    if (this.#closed) throw lockClosed("thread backend");
    const { signal } = wait;
    signal.throwIfAborted();
    const words = this.#words;
    const slot = this.#table.slotOf(req.namespace, req.key);
    const shared = req.mode === "shared";
    // Announce the wait before the first attempt: a release that comes after
    // that attempt then sees a waiter and notifies (sequentially consistent atomics).
    Atomics.add(words, slot + WAITERS, 1);
    if (!shared) Atomics.add(words, slot + WRITERS, 1);
    let granted = false;
    try {
      for (;;) {
        if (this.#closed) throw lockClosed("thread backend");
        signal.throwIfAborted();
        const seq = Atomics.load(words, slot + SEQ);
        if (this.#take(slot, shared, req.limit)) {
          granted = true;
          return this.#granted(req, slot, shared);
        }
        await this.#sleep(slot + SEQ, seq, signal);
      }
    } finally {
      Atomics.sub(words, slot + WAITERS, 1);
      if (!shared) {
        Atomics.sub(words, slot + WRITERS, 1);
        // A writer that gave up may have been all that held readers back.
        if (!granted) this.#changed(slot);
      }
    }
  }

  extend(req: LockRequest, _ttlMs: number): Promise<boolean> {
    return this.#holds.has(req.owner) ? TRUE : FALSE;
  }

  release(req: LockRequest): Promise<void> {
    const hold = this.#holds.get(req.owner);
    if (hold === undefined) return DONE;
    this.#holds.delete(req.owner);
    this.#free(hold);
    return DONE;
  }

  // An arrow property: wrappers may call it with a Proxy as `this`, on which #private fields throw.
  readonly close = (): Promise<void> => {
    if (this.#closed) return DONE;
    this.#closed = true;
    for (const interrupt of [...this.#sleepers]) interrupt();
    for (const hold of this.#holds.values()) this.#free(hold);
    this.#holds.clear();
    return DONE;
  };

  /** One compare-and-swap attempt (retried only when another thread changed the word meanwhile). */
  #take(slot: number, shared: boolean, limit: number): boolean {
    const words = this.#words;
    for (;;) {
      const state = Atomics.load(words, slot + STATE);
      let next: number;
      if (shared) {
        if (state > 0 || Atomics.load(words, slot + WRITERS) !== 0) return false;
        next = state - 1;
      } else {
        if (state < 0 || state >= limit) return false;
        next = state + 1;
      }
      if (Atomics.compareExchange(words, slot + STATE, state, next) === state) return true;
    }
  }

  #granted(req: LockRequest, slot: number, shared: boolean): Grant {
    this.#holds.set(req.owner, { slot, shared });
    return { granted: true, fencingToken: this.#table.nextToken() };
  }

  #free(hold: TableHold): void {
    if (hold.shared) Atomics.add(this.#words, hold.slot + STATE, 1);
    else Atomics.sub(this.#words, hold.slot + STATE, 1);
    this.#changed(hold.slot);
  }

  /** Wakes the slot's waiters, in every thread, if there are any. */
  #changed(slot: number): void {
    const words = this.#words;
    if (Atomics.load(words, slot + WAITERS) === 0) return;
    Atomics.add(words, slot + SEQ, 1);
    Atomics.notify(words, slot + SEQ);
  }

  /** Sleeps until the word at `index` moves from `seen`, the signal aborts, close, or RECHECK_MS. */
  #sleep(index: number, seen: number, signal: AbortSignal): Promise<void> {
    const result = waitAsync(this.#words, index, seen, RECHECK_MS);
    if (!result.async) return DONE;
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", interrupt);
        this.#sleepers.delete(interrupt);
        resolve();
      };
      // Abort or close: also ends this thread's pending waitAsync now rather than at
      // its timeout, so nothing of the waiter is left behind (the slot's other
      // sleepers wake too, re-check and sleep again).
      const interrupt = (): void => {
        wake();
        Atomics.notify(this.#words, index);
      };
      // Ref'd: a pending waitAsync alone does not keep a thread's event loop alive.
      const timer = setTimeout(wake, RECHECK_MS + 50);
      signal.addEventListener("abort", interrupt, { once: true });
      this.#sleepers.add(interrupt);
      void result.value.then(wake);
    });
  }
}
