import { type FSWatcher, watch } from "node:fs";
import { join } from "node:path";
import { WakeRegistry } from "@locks/core/backend";
import type { Io } from "./io.js";
import { GATE_SUFFIX, stemOf } from "./names.js";

/**
 * One `fs.watch` on the lock directory per backend instance, shared by every
 * waiter: opened when a first key gets waiters, closed when no key has any.
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
  /** Waiters by key stem. */
  readonly waiters = new WakeRegistry({
    first: () => this.#open(),
    last: () => {
      if (this.waiters.keys > 0) return;
      this.close();
      // The next waiter tries to watch again.
      this.#failed = false;
    },
  });
  readonly #directory: string;
  readonly #io: Io;
  #watcher: FSWatcher | undefined;
  #failed = false;

  constructor(directory: string, io: Io) {
    this.#directory = directory;
    this.#io = io;
  }

  close(): void {
    const watcher = this.#watcher;
    this.#watcher = undefined;
    watcher?.close();
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
        this.waiters.wakeAll();
      });
      this.#watcher = watcher;
    } catch {
      // Too many watches, unsupported file system: polling still works.
      this.#failed = true;
    }
  }

  #onEvent(name: string | Buffer | null): void {
    if (name === null) {
      this.waiters.wakeAll();
      return;
    }
    const entry = typeof name === "string" ? name : name.toString("utf8");
    const stem = stemOf(entry);
    if (stem === undefined || this.waiters.waiters(stem).length === 0) return;
    if (!entry.endsWith(GATE_SUFFIX)) {
      this.waiters.wake(stem);
      return;
    }
    // Woken only when the gate is gone: its key may be free.
    this.#io.lstatIfAny(join(this.#directory, entry)).then(
      (stats) => {
        if (stats === undefined) this.waiters.wake(stem);
      },
      () => this.waiters.wake(stem),
    );
  }
}
