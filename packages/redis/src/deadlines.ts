/** Something with a deadline (monotonic ms), told when it passes. */
export interface Expiring {
  readonly at: number;
  expire(): void;
}

/** How often pending entries are checked for their deadline: timeouts need not be precise to the ms. */
const SWEEP_MS = 5;

/**
 * Deadlines of calls in flight, checked by one timer that runs only while
 * something is pending. A timer per call would cost more than the rest of an
 * uncontended acquire on the client side.
 */
export class Deadlines {
  readonly #pending = new Set<Expiring>();
  #timer: NodeJS.Timeout | undefined;

  add(entry: Expiring): void {
    this.#pending.add(entry);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#sweep(), SWEEP_MS);
      this.#timer.unref();
    }
  }

  delete(entry: Expiring): void {
    this.#pending.delete(entry);
  }

  #sweep(): void {
    if (this.#pending.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = performance.now();
    for (const entry of this.#pending) {
      if (entry.at <= now) {
        this.#pending.delete(entry);
        entry.expire();
      }
    }
  }
}
