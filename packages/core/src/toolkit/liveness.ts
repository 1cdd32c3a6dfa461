import { monotonicNow } from "../clock.js";

/**
 * What `Liveness` needs to know of a session.
 *
 * @group Keep-alive
 */
export interface LivenessOptions {
  /** How long one successful beat proves the session alive, from when the beat started. */
  readonly validForMs: number;
  /** Time between beats; also the retry delay after a failed one (capped by what validity is left). */
  readonly intervalMs: number;
  /**
   * Proves the session alive (a lease keep-alive, `SELECT 1`): resolves when
   * it is, rejects when it is not. `signal` aborts when the beat can no longer
   * help (the session's validity ran out, or `stop()`).
   */
  beat(signal: AbortSignal): Promise<void>;
  /** Called once, when no beat succeeded in time: the session must be presumed dead. */
  lost(cause: unknown): void;
}

/**
 * Keeps a session (an etcd lease, a database connection, a server
 * connection) proven alive by beating at an interval, knows until when it
 * surely is (`validUntil`, monotonic), and declares it lost when that
 * passes without a successful beat. One unref'd timer, none after `stop()`.
 *
 * @group Keep-alive
 */
export class Liveness {
  readonly #options: LivenessOptions;
  #validUntil: number;
  #timer: NodeJS.Timeout | undefined;
  #beating: AbortController | undefined;
  #lastError: unknown;
  #stopped = false;

  /** Starts beating; the session counts as proven alive now. */
  constructor(options: LivenessOptions) {
    this.#options = options;
    this.#validUntil = monotonicNow() + options.validForMs;
    this.#schedule(options.intervalMs);
  }

  /** The monotonic instant until which the session is surely alive. */
  get validUntil(): number {
    return this.#validUntil;
  }

  /** Stops beating (idempotent); an unfinished beat is aborted. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#beating?.abort();
  }

  /** (Re)arms the one timer, never past the end of validity. */
  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    const left = this.#validUntil - monotonicNow();
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, Math.min(ms, left)));
    // The session's owner keeps the process alive, not its keep-alive.
    this.#timer.unref();
  }

  #tick(): void {
    if (this.#stopped) return;
    if (monotonicNow() >= this.#validUntil) {
      this.stop();
      this.#options.lost(this.#lastError ?? new Error("no keep-alive was answered in time"));
      return;
    }
    if (this.#beating !== undefined) {
      this.#schedule(this.#validUntil - monotonicNow());
      return;
    }
    const start = monotonicNow();
    const beating = new AbortController();
    this.#beating = beating;
    this.#options.beat(beating.signal).then(
      () => {
        this.#beating = undefined;
        if (this.#stopped) return;
        this.#validUntil = Math.max(this.#validUntil, start + this.#options.validForMs);
        this.#lastError = undefined;
        this.#schedule(this.#options.intervalMs);
      },
      (error: unknown) => {
        this.#beating = undefined;
        this.#lastError = error;
        this.#schedule(this.#options.intervalMs);
      },
    );
    // The beat may hang: wake at the end of validity anyway, to declare the loss on time.
    this.#schedule(this.#validUntil - monotonicNow());
  }
}
