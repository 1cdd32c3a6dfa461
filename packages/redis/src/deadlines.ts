import { monotonicNow } from "@locks/core";

interface Pending {
  readonly at: number;
  readonly expire: () => void;
}

/** How often pending commands are checked for their deadline: timeouts need not be precise to the ms. */
const SWEEP_MS = 5;

/**
 * Deadlines of commands in flight, checked by one timer that runs only while
 * something is pending. A timer per command would cost more than the rest of
 * an uncontended acquire on the client side.
 */
export class Deadlines {
  readonly #pending = new Set<Pending>();
  #timer: NodeJS.Timeout | undefined;

  /** Calls `expire` if `forget` was not called within `ms`; returns `forget`. */
  add(ms: number, expire: () => void): () => void {
    const entry: Pending = { at: monotonicNow() + ms, expire };
    this.#pending.add(entry);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#sweep(), SWEEP_MS);
      this.#timer.unref();
    }
    return () => {
      this.#pending.delete(entry);
    };
  }

  #sweep(): void {
    if (this.#pending.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = monotonicNow();
    for (const entry of this.#pending) {
      if (entry.at <= now) {
        this.#pending.delete(entry);
        entry.expire();
      }
    }
  }
}
