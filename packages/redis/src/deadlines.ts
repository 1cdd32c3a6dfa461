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

  /** Forgets every entry and stops the timer (the owner settles what was pending). */
  clear(): void {
    this.#pending.clear();
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #sweep(): void {
    if (this.#pending.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const now = performance.now();
    const due: Expiring[] = [];
    for (const entry of this.#pending) if (entry.at <= now) due.push(entry);
    if (due.length === 0) return;
    // After the event loop was blocked (a loaded machine, a long GC) timers run before the
    // sockets are read: replies that arrived meanwhile are read in the poll phase that
    // follows, and settle their entries before this check phase callback. A busy client is
    // never mistaken for a silent server.
    setImmediate(() => {
      for (const entry of due) if (this.#pending.delete(entry)) entry.expire();
    });
  }
}
