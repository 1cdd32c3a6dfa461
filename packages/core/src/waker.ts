import { onAbort } from "./abort.js";

/**
 * A sleep that ends early on a notification (`wake`) or once `cancel`
 * aborts. A notification that arrives while no sleep is under way ends the
 * next one at once, until `reset` forgets it before an attempt.
 */
export class Waker {
  readonly #cancel: AbortSignal | undefined;
  #notified = false;
  #resolve: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #stopListening: () => void;

  constructor(cancel?: AbortSignal) {
    this.#cancel = cancel;
    this.#stopListening = cancel === undefined ? noop : onAbort(cancel, () => this.wake());
  }

  /** Bound so backends can call it as a plain callback. */
  readonly wake = (): void => {
    this.#notified = true;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    resolve?.();
  };

  /** Forgets notifications that arrived before the attempt about to start. */
  reset(): void {
    this.#notified = false;
  }

  sleep(ms: number): Promise<void> {
    if (this.#notified || this.#cancel?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#timer = setTimeout(this.wake, ms);
    });
  }

  dispose(): void {
    this.#stopListening();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

function noop(): void {}
