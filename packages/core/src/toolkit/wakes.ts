import type { KeyEvent } from "../backend.js";

/**
 * Something waiting for a key to change: a subscription's `onChange` fits.
 *
 * @group Waiting
 */
export interface Wakeable {
  wake(event?: KeyEvent): void;
}

/**
 * Called when a key gets its first waiter (start listening) or loses its last (stop).
 *
 * @group Waiting
 */
export interface WakeHooks {
  first?(key: string): void;
  last?(key: string): void;
}

/**
 * Who waits for which key, for a backend that turns one store event (a
 * pub/sub message, a file change, a NOTIFY) into wake-ups: waiters in the
 * order they came, and hooks to subscribe to a key's events only while
 * someone waits for it.
 *
 * @group Waiting
 */
export class WakeRegistry<W extends Wakeable = Wakeable> {
  readonly #byKey = new Map<string, Set<W>>();
  readonly #hooks: WakeHooks;

  constructor(hooks: WakeHooks = {}) {
    this.#hooks = hooks;
  }

  /** How many keys have waiters. */
  get keys(): number {
    return this.#byKey.size;
  }

  /** Adds a waiter; the returned function removes it (idempotent). */
  add(key: string, waiter: W): () => void {
    let waiters = this.#byKey.get(key);
    if (waiters === undefined) {
      waiters = new Set();
      this.#byKey.set(key, waiters);
      this.#hooks.first?.(key);
    }
    waiters.add(waiter);
    return () => this.#remove(key, waiter);
  }

  /** The waiters of `key`, oldest first. */
  waiters(key: string): readonly W[] {
    return [...(this.#byKey.get(key) ?? [])];
  }

  /** Wakes the waiters of `key` that `pick` chooses (default: all). */
  wake(key: string, pick: (waiters: readonly W[]) => Iterable<W> = (all) => all): void {
    const waiters = this.#byKey.get(key);
    if (waiters !== undefined) for (const waiter of pick([...waiters])) waiter.wake();
  }

  /**
   * Tells every waiter: `"changed"` (the default) when the channel is back
   * after notifications may have been missed, `"unsure"` when it dropped.
   */
  wakeAll(event?: KeyEvent): void {
    for (const waiters of [...this.#byKey.values()])
      for (const waiter of [...waiters]) waiter.wake(event);
  }

  #remove(key: string, waiter: W): void {
    const waiters = this.#byKey.get(key);
    if (waiters === undefined || !waiters.delete(waiter) || waiters.size > 0) return;
    this.#byKey.delete(key);
    this.#hooks.last?.(key);
  }
}
