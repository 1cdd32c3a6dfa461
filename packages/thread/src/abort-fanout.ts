/** Something waiting that must give up when its signal aborts. */
export interface AbortableWait {
  /** Called once when the signal aborts, with `signal.reason`. */
  onAbort(reason: unknown): void;
}

interface Watch<T> {
  readonly waits: Set<T>;
  readonly listener: () => void;
}

/**
 * One abort listener per signal, however many waits share it. The core may
 * hand every wait of a client the same signal (its close signal), and
 * `addEventListener` on an AbortSignal is linear in the listeners already
 * there (Node checks for duplicates): one listener per wait would make n
 * waiters cost O(n^2).
 */
export class AbortFanout<T extends AbortableWait> {
  readonly #watches = new Map<AbortSignal, Watch<T>>();

  add(signal: AbortSignal, wait: T): void {
    let watch = this.#watches.get(signal);
    if (watch === undefined) {
      const waits = new Set<T>();
      const listener = (): void => {
        this.#watches.delete(signal);
        // One by one: a wait may be granted or leave while an earlier one gives up.
        for (const w of [...waits]) if (waits.delete(w)) w.onAbort(signal.reason);
      };
      watch = { waits, listener };
      this.#watches.set(signal, watch);
      signal.addEventListener("abort", listener, { once: true });
    }
    watch.waits.add(wait);
  }

  /** Stops watching for `wait` (granted or gone); no-op when it is not watched any more. */
  delete(signal: AbortSignal, wait: T): void {
    const watch = this.#watches.get(signal);
    if (watch === undefined || !watch.waits.delete(wait) || watch.waits.size > 0) return;
    this.#watches.delete(signal);
    signal.removeEventListener("abort", watch.listener);
  }
}
