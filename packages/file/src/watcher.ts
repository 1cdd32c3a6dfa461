import { type FSWatcher, watch } from "node:fs";
import { GATE_SUFFIX, stemOf } from "./names.js";

/** Says whether the gate named `entry` (in the watched directory) is gone, so its key may be free. */
export type GateProbe = (entry: string) => Promise<boolean>;

/**
 * One `fs.watch` on the lock directory per backend instance, shared by every
 * waiter, opened while someone waits and closed when nobody does.
 *
 * Every change of an entry is reported, without saying which (on Linux a
 * gate created, removed, or its mtime refreshed all read "rename"). So an
 * event about a gate is checked once for all the key's waiters: they are
 * woken only when the gate is gone, not each time someone takes it or
 * refreshes it. Registry events (a holder left) always wake.
 * fs.watch can miss events (network file systems, some platforms): the core
 * still polls, bounded, as the fallback, and a stale holder's takeover is
 * timed by the attempt's `retryAfterMs`.
 */
export class DirectoryWatcher {
  readonly #directory: string;
  readonly #probe: GateProbe;
  readonly #waiters = new Map<string, Set<() => void>>();
  #watcher: FSWatcher | undefined;
  #failed = false;

  constructor(directory: string, probe: GateProbe) {
    this.#directory = directory;
    this.#probe = probe;
  }

  /** Calls `onChange` when an entry of `stem` changes; returns the unsubscribe function. */
  subscribe(stem: string, onChange: () => void): () => void {
    let set = this.#waiters.get(stem);
    if (set === undefined) {
      set = new Set();
      this.#waiters.set(stem, set);
    }
    // A fresh function per subscription, so one callback subscribed twice unsubscribes once each.
    const entry = (): void => onChange();
    set.add(entry);
    this.#open();
    return () => {
      const current = this.#waiters.get(stem);
      if (current === undefined) return;
      current.delete(entry);
      if (current.size === 0) this.#waiters.delete(stem);
      if (this.#waiters.size === 0) {
        this.close();
        // The next waiter tries to watch again.
        this.#failed = false;
      }
    };
  }

  /** Whether the watch is working (false: waiters rely on polling alone). */
  get watching(): boolean {
    return this.#watcher !== undefined;
  }

  close(): void {
    const watcher = this.#watcher;
    this.#watcher = undefined;
    watcher?.close();
  }

  /** Stops watching and forgets every waiter. */
  dispose(): void {
    this.#waiters.clear();
    this.close();
  }

  #open(): void {
    if (this.#watcher !== undefined || this.#failed) return;
    try {
      // Not persistent: a waiting acquire keeps the process alive through its own timers.
      const watcher = watch(this.#directory, { persistent: false }, (_event, name) =>
        this.#onEvent(name),
      );
      watcher.on("error", () => {
        // The directory went away or the watch broke: fall back to polling, wake everyone once.
        this.#failed = true;
        this.close();
        this.#wakeAll();
      });
      this.#watcher = watcher;
    } catch {
      // Too many watches, unsupported file system: polling still works.
      this.#failed = true;
    }
  }

  #onEvent(name: string | Buffer | null): void {
    if (name === null) {
      this.#wakeAll();
      return;
    }
    const entry = typeof name === "string" ? name : name.toString("utf8");
    const stem = stemOf(entry);
    if (stem === undefined || !this.#waiters.has(stem)) return;
    if (!entry.endsWith(GATE_SUFFIX)) {
      this.#wake(stem);
      return;
    }
    this.#probe(entry).then(
      (free) => {
        if (free) this.#wake(stem);
      },
      () => this.#wake(stem),
    );
  }

  #wake(stem: string): void {
    const set = this.#waiters.get(stem);
    if (set === undefined) return;
    for (const wake of [...set]) wake();
  }

  #wakeAll(): void {
    for (const set of [...this.#waiters.values()]) for (const wake of [...set]) wake();
  }
}
