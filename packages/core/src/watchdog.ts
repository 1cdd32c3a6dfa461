import { monotonicNow } from "./clock.js";
import type { HeldLease } from "./lease.js";

/**
 * One timer per lease with a TTL. It wakes at the next extension time (about
 * a third of the TTL after the last one started) or at the lease's deadline,
 * whichever comes first. At the deadline the lease is declared lost even if
 * an extension is still in flight: the holder learns of a loss from its own
 * clock, never later from a server event.
 */
export class Watchdog {
  readonly #lease: HeldLease;
  readonly #autoExtend: boolean;
  #timer: NodeJS.Timeout | undefined;
  #nextExtendAt = Number.POSITIVE_INFINITY;
  #ttlMs = 0;
  #extending = false;
  #stopped = false;

  constructor(lease: HeldLease, autoExtend: boolean) {
    this.#lease = lease;
    this.#autoExtend = autoExtend;
  }

  /** (Re)starts the timer after a grant or an extension that started at `start`. */
  arm(start: number, deadline: number, ttlMs: number): void {
    if (this.#stopped) return;
    this.#ttlMs = ttlMs;
    this.#nextExtendAt = this.#autoExtend ? start + ttlMs / 3 : Number.POSITIVE_INFINITY;
    this.#schedule(Math.min(this.#nextExtendAt, deadline));
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#wake(), Math.max(0, Math.ceil(at - monotonicNow())));
    // A lease alone must not keep the process alive: whatever uses the lock holds it open.
    this.#timer.unref();
  }

  #wake(): void {
    this.#timer = undefined;
    if (this.#stopped) return;
    const now = monotonicNow();
    const deadline = this.#lease.deadline;
    // Checked first: after a pause (SIGSTOP, blocked event loop) both times are past, and the loss wins.
    if (now >= deadline) {
      this.#lease.markLost("the lease's TTL passed without an extension");
      return;
    }
    // Timers may fire a little early against performance.now(): 1 ms of slack.
    if (now >= this.#nextExtendAt - 1 && !this.#extending) {
      this.#extending = true;
      this.#lease.renew(this.#ttlMs).then(
        () => {
          this.#extending = false;
        },
        () => {
          // A lost lease is already marked; a transient error retries until the deadline.
          this.#extending = false;
          const retryDelay = Math.max(10, Math.min(1000, this.#ttlMs / 10));
          if (!this.#stopped) this.#schedule(Math.min(monotonicNow() + retryDelay, deadline));
        },
      );
    }
    if (this.#timer === undefined) {
      this.#schedule(this.#extending ? deadline : Math.min(this.#nextExtendAt, deadline));
    }
  }
}
