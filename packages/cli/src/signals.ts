import { constants } from "node:os";

/**
 * The signals `locks run` passes on to its command. SIGUSR1 too: uncaught,
 * Node would open its inspector on 127.0.0.1:9229 (see `cli.ts`).
 */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = [
  "SIGINT",
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
];

/** 128 + the signal's number, as shells report a process a signal ended. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0);
}

/**
 * Catches the forwarded signals for as long as it is open and hands each one
 * to the current `handler`, which changes with the phase of `locks run`:
 * waiting (stop waiting), running (pass it on), releasing (exit now).
 */
export class SignalRouter implements Disposable {
  handler: (signal: NodeJS.Signals) => void;
  readonly #listeners = new Map<NodeJS.Signals, () => void>();

  constructor(handler: (signal: NodeJS.Signals) => void) {
    this.handler = handler;
    for (const signal of FORWARDED_SIGNALS) {
      const listener = (): void => this.handler(signal);
      try {
        process.on(signal, listener);
        this.#listeners.set(signal, listener);
      } catch {
        // Not every platform can catch every signal (Windows); pass on what it can.
      }
    }
  }

  [Symbol.dispose](): void {
    for (const [signal, listener] of this.#listeners) process.off(signal, listener);
    this.#listeners.clear();
  }
}

/** The reason an acquire was aborted: a signal reached `locks` while it waited. */
export class Interrupted extends Error {
  readonly signal: NodeJS.Signals;

  constructor(signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
    this.name = "Interrupted";
    this.signal = signal;
  }
}
