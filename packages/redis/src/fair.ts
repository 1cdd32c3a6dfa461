import { type Attempt, type LockRequest, lockClosed, onAbort } from "@locks/core";
import type { Waiters } from "./waiters.js";
import { wireMode } from "./wire.js";

/** What a fair acquire needs from its backend. */
export interface FairHost {
  /** One attempt that joins (or stays in) the server's queue. */
  attempt(): Promise<Attempt>;
  /** Leaves the queue and releases anything granted meanwhile (owner-checked). */
  leave(): Promise<void>;
  /** How often the queue entry is refreshed (a third of its TTL). */
  readonly refreshMs: number;
  readonly waiters: Waiters;
  /** The channel as the server reports it, for `waiters`. */
  readonly channelName: string;
  retain(): Promise<unknown>;
  unretain(): void;
  /** Aborted when the backend closes. */
  readonly closing: AbortSignal;
}

/**
 * A blocking acquire through the server's FIFO queue. The waiter sleeps until
 * a release names it as the head of the queue (or, for shared and semaphore
 * heads, its key), until the hint of the last attempt says something may have
 * changed (the holder's TTL, a dead head's entry expiring), or until its queue
 * entry needs a refresh. When it gives up (signal, close, error) it leaves the
 * queue and releases whatever an attempt in flight may have granted: that
 * clean-up is sent after the attempt on the same connection, so it runs after it.
 */
export async function fairAcquire(
  host: FairHost,
  request: LockRequest,
  signal: AbortSignal,
): Promise<Attempt & { granted: true }> {
  const signals = [signal, host.closing];
  const sleeper = new Sleeper();
  host.waiters.add(host.channelName, {
    owner: request.owner,
    mode: wireMode(request),
    limit: request.limit,
    wake: sleeper.wake,
  });
  try {
    // The first attempt joins the queue without waiting for the subscription (a first
    // subscriber connection takes a while): the queue's order is the order waiters started.
    const subscribed = host.retain();
    let confirmed = false;
    for (;;) {
      sleeper.reset();
      const attempt = await raceAbort(host.attempt(), signals);
      if (attempt.granted) {
        if (signal.aborted) throw signal.reason;
        if (host.closing.aborted) throw lockClosed("redis backend");
        return attempt;
      }
      if (!confirmed) {
        // A release published before the subscription took effect was not heard: try again
        // at once when it has.
        await raceAbort(subscribed, signals);
        confirmed = true;
        continue;
      }
      const hint = attempt.retryAfterMs ?? host.refreshMs;
      await sleeper.sleep(Math.min(host.refreshMs, hint + 1), signals);
      signal.throwIfAborted();
      if (host.closing.aborted) throw lockClosed("redis backend");
    }
  } catch (error) {
    await host.leave().catch(() => undefined);
    if (signal.aborted) throw signal.reason;
    throw error;
  } finally {
    host.waiters.remove(request.owner);
    host.unretain();
  }
}

/** A one-shot sleep that ends on a wake, a timer or an abort. */
export class Sleeper {
  #woken = false;
  #resolve: (() => void) | undefined;

  /** Bound, so it can be handed out as a callback. */
  readonly wake = (): void => {
    this.#woken = true;
    this.#resolve?.();
  };

  /** Forgets wakes that came before the attempt about to start. */
  reset(): void {
    this.#woken = false;
  }

  sleep(ms: number, signals: readonly AbortSignal[]): Promise<void> {
    if (this.#woken || signals.some((s) => s.aborted)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      // onAbort: the signal may be shared by thousands of waits (the client's close signal).
      const stops = signals.map((s) => onAbort(s, () => done()));
      const done = (): void => {
        clearTimeout(timer);
        for (const stop of stops) stop();
        this.#resolve = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#resolve = done;
    });
  }
}

/** Resolves or rejects with `promise`, or rejects at once with the reason of the first signal to abort. */
export function raceAbort<T>(promise: Promise<T>, signals: readonly AbortSignal[]): Promise<T> {
  const aborted = signals.find((s) => s.aborted);
  if (aborted !== undefined) return Promise.reject(aborted.reason);
  return new Promise<T>((resolve, reject) => {
    const stops = signals.map((s) => onAbort(s, (reason) => finish(() => reject(reason))));
    const finish = (settle: () => void): void => {
      for (const stop of stops) stop();
      settle();
    };
    promise.then(
      (value) => finish(() => resolve(value)),
      (error: unknown) => finish(() => reject(error)),
    );
  });
}
