/*
 * Why a wait ends early: the caller's signal, or the backend closing. The two
 * are watched side by side rather than merged with AbortSignal.any, which
 * costs more than a whole handoff's worth of local work.
 */

import { onAbort } from "@locks/core";

/** The backend closing, as something a wait can listen to. */
export class Closing {
  #reason: unknown;
  #closed = false;
  readonly #listeners = new Set<() => void>();

  get closed(): boolean {
    return this.#closed;
  }

  get reason(): unknown {
    return this.#reason;
  }

  close(reason: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reason = reason;
    for (const listener of [...this.#listeners]) listener();
    this.#listeners.clear();
  }

  listen(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}

/** The caller's signal or the backend closing, whichever comes first. */
export class Cancel {
  readonly #signal: AbortSignal;
  readonly #closing: Closing;

  constructor(signal: AbortSignal, closing: Closing) {
    this.#signal = signal;
    this.#closing = closing;
  }

  get aborted(): boolean {
    return this.#signal.aborted || this.#closing.closed;
  }

  /** The caller's reason, else the closing's. */
  get reason(): unknown {
    return this.#signal.aborted ? this.#signal.reason : this.#closing.reason;
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  /** Calls `listener` once when either aborts; returns the unsubscribe. */
  onAbort(listener: () => void): () => void {
    let done = false;
    let stopSignal = noop;
    let stopClosing = noop;
    const once = (): void => {
      if (done) return;
      done = true;
      stopSignal();
      stopClosing();
      listener();
    };
    // Through core's onAbort: the core may give every wait of a client the same signal, and
    // addEventListener on one signal is linear in its listeners. Like an abort listener, it
    // never fires for a signal that had already aborted (onAbort alone would call at once).
    if (!this.#signal.aborted) stopSignal = onAbort(this.#signal, once);
    stopClosing = this.#closing.listen(once);
    return () => {
      done = true;
      stopSignal();
      stopClosing();
    };
  }
}

function noop(): void {}
