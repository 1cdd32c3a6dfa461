import { type FSWatcher, watch } from "node:fs";
import { join } from "node:path";
import { type KeyEvent, type Unsubscribe, WakeRegistry } from "@locks/core/backend";
import type { Io } from "./io.js";
import { GATE_SUFFIX, stemOf } from "./names.js";

/** After a watch failed, it is opened again this long after, doubling up to the maximum. */
const REOPEN_MIN_MS = 250;
const REOPEN_MAX_MS = 5_000;

/**
 * One `fs.watch` on the lock directory per backend instance, shared by every
 * key with a subscriber (the core subscribes once per key and client):
 * opened when a first key gets one, closed when no key has any.
 *
 * Every change of an entry is reported, without saying which (on Linux a
 * gate created, removed, or its mtime refreshed all read "rename"). So an
 * event about a gate is checked once for the key: its subscribers are
 * woken only when the gate is gone, not each time someone takes it or
 * refreshes it. Registry events (a holder left) always wake.
 *
 * When the watch cannot be opened (too many watches, an unsupported file
 * system) or breaks (the directory went away), subscribers are told
 * "unsure", so the core polls, and the watch is opened again with back-off;
 * once it is, they are woken ("changed": anything may have been missed).
 * fs.watch can also miss events silently (network file systems): the core's
 * slow safety poll, at the refusal's `retryAfterMs`, covers that.
 */
export class DirectoryWatcher {
  readonly #subscribers = new WakeRegistry({
    first: () => this.#open(),
    last: () => {
      if (this.#subscribers.keys === 0) this.close();
    },
  });
  readonly #directory: string;
  readonly #io: Io;
  #watcher: FSWatcher | undefined;
  #reopen: NodeJS.Timeout | undefined;
  #reopenMs = REOPEN_MIN_MS;

  constructor(directory: string, io: Io) {
    this.#directory = directory;
    this.#io = io;
  }

  /** Reports changes of the key whose files start with `stem`. */
  subscribe(stem: string, onChange: (event?: KeyEvent) => void): Unsubscribe {
    const unsubscribe = this.#subscribers.add(stem, { wake: onChange });
    if (this.#watcher === undefined) onChange("unsure");
    return unsubscribe;
  }

  /** Stops the watch and any attempt to open it again. */
  close(): void {
    const watcher = this.#watcher;
    this.#watcher = undefined;
    watcher?.close();
    if (this.#reopen !== undefined) clearTimeout(this.#reopen);
    this.#reopen = undefined;
    this.#reopenMs = REOPEN_MIN_MS;
  }

  #open(): void {
    if (this.#watcher !== undefined || this.#reopen !== undefined) return;
    try {
      // Not persistent: a waiting acquire keeps the process alive through its own timers.
      const watcher = watch(this.#directory, { persistent: false }, (_event, name) =>
        this.#onEvent(name),
      );
      watcher.on("error", () => {
        if (this.#watcher !== watcher) return;
        this.#watcher = undefined;
        watcher.close();
        this.#failed();
      });
      this.#watcher = watcher;
    } catch {
      this.#failed();
    }
  }

  /** The watch is not there: every subscriber polls until it is open again. */
  #failed(): void {
    this.#subscribers.wakeAll("unsure");
    this.#reopen = setTimeout(() => {
      this.#reopen = undefined;
      if (this.#subscribers.keys === 0) return;
      this.#reopenMs = Math.min(this.#reopenMs * 2, REOPEN_MAX_MS);
      this.#open();
      // Open again: what changed meanwhile went unseen.
      if (this.#watcher !== undefined) this.#subscribers.wakeAll();
    }, this.#reopenMs);
    this.#reopen.unref();
  }

  #onEvent(name: string | Buffer | null): void {
    if (name === null) {
      this.#subscribers.wakeAll();
      return;
    }
    const entry = typeof name === "string" ? name : name.toString("utf8");
    const stem = stemOf(entry);
    if (stem === undefined || this.#subscribers.waiters(stem).length === 0) return;
    if (!entry.endsWith(GATE_SUFFIX)) {
      this.#subscribers.wake(stem);
      return;
    }
    // Woken only when the gate is gone: its key may be free.
    this.#io.lstatIfAny(join(this.#directory, entry)).then(
      (stats) => {
        if (stats === undefined) this.#subscribers.wake(stem);
      },
      () => this.#subscribers.wake(stem),
    );
  }
}
