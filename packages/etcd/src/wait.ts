import { onAbort } from "@locks/core";
import { prefixEnd } from "./layout.js";
import type { Watch, WatchStream } from "./watches.js";

/** What a waiter watches. */
export interface WaitTarget {
  /** Key (raw, client prefix included) whose deletion ends the wait. */
  readonly key: Buffer;
  /** When true, any deletion of a key starting with `key` ends the wait. */
  readonly prefix: boolean;
}

/** True when both targets name the same key or prefix. */
export function sameTarget(a: WaitTarget, b: WaitTarget): boolean {
  return a.prefix === b.prefix && a.key.equals(b.key);
}

/**
 * A watch for the deletion of a key (or of any key under a prefix), started
 * at the current revision. etcd delivers the events of a watch that starts
 * "now" as they happen; one that starts at a past revision is caught up by a
 * background loop that runs every 100 ms, too late for a handoff. So the
 * waiter opens the watch first, then reads its position at a revision the
 * watch covers ({@link DeletionWatch.revision}).
 */
export class DeletionWatch {
  readonly target: WaitTarget;
  #watch: Watch | undefined;
  #fired = false;
  #notify: (() => void) | undefined;
  #closed = false;

  /**
   * Opens the watch; resolves once etcd confirmed it, or with undefined when
   * that takes longer than `timeoutMs` or fails (the caller polls instead).
   * Rejects with `signal.reason` when the signal aborts.
   */
  static open(
    watches: WatchStream,
    target: WaitTarget,
    signal: AbortSignal,
    timeoutMs: number,
  ): Promise<DeletionWatch | undefined> {
    return new Promise((resolve, reject) => {
      let done = false;
      let stopListening = (): void => {};
      const finish = (watch: DeletionWatch | undefined, error?: unknown): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        stopListening();
        if (error !== undefined) reject(error);
        else resolve(watch);
      };
      const timer = setTimeout(() => finish(undefined), timeoutMs);
      stopListening = onAbort(signal, (reason) => finish(undefined, reason));
      if (done) return;
      // Created first: a deletion may be reported before the confirmation is handled.
      const deletion = new DeletionWatch(target);
      watches
        .watch(target.key, target.prefix ? prefixEnd(target.key) : undefined, () =>
          deletion.#fire(),
        )
        .then(
          (watch) => {
            deletion.#watch = watch;
            if (done) deletion.close();
            else finish(deletion);
          },
          () => finish(undefined),
        );
    });
  }

  private constructor(target: WaitTarget) {
    this.target = target;
  }

  /** The revision the watch started after: every deletion after it is delivered. */
  get revision(): bigint {
    return this.#watch?.revision ?? 0n;
  }

  #fire(): void {
    this.#fired = true;
    this.#notify?.();
  }

  /** True once a deletion was seen: the watch has served its purpose. */
  get fired(): boolean {
    return this.#fired;
  }

  /**
   * Resolves on a deletion (at once if one was already seen), when `wake` is
   * called (session lost, backend closed), or after `fallbackMs` (bounded
   * polling, in case a notification is missed); rejects with `signal.reason`.
   */
  wait(
    signal: AbortSignal,
    fallbackMs: number,
    setWaker: (wake: (() => void) | undefined) => void,
  ): Promise<void> {
    if (this.#fired) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let done = false;
      let stopListening = (): void => {};
      const finish = (error?: unknown): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        stopListening();
        this.#notify = undefined;
        setWaker(undefined);
        if (error !== undefined) reject(error);
        else resolve();
      };
      const timer = setTimeout(() => finish(), fallbackMs);
      this.#notify = () => finish();
      setWaker(() => finish());
      stopListening = onAbort(signal, (reason) => finish(reason));
    });
  }

  /** Cancels the watch (nothing to wait for: the cancel request goes out on the stream). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#notify = undefined;
    this.#watch?.cancel();
  }
}
