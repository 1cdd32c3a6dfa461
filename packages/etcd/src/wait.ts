import type { Namespace, Watcher } from "etcd3";

/** What to wait for. */
export interface WaitTarget {
  /** Key (relative to the client's Namespace) whose deletion ends the wait. */
  readonly key: Buffer;
  /** When true, any deletion of a key starting with `key` ends the wait. */
  readonly prefix: boolean;
  /** First revision to watch: the revision of the read that chose the target, plus one. */
  readonly fromRevision: bigint;
}

/**
 * Resolves when the target is deleted (one watch event), when `wake` is
 * called (session lost, backend closed), on a watch error, or after
 * `fallbackMs` (bounded polling in case a notification is missed); rejects
 * with `signal.reason` when the signal aborts. The watch starts at the
 * revision of the read that chose the target, so a deletion between that read
 * and the watch is never missed. The watcher is cancelled on the way out.
 */
export function waitForDeletion(
  client: Namespace,
  target: WaitTarget,
  signal: AbortSignal,
  fallbackMs: number,
  setWaker: (wake: (() => void) | undefined) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let watcher: Watcher | undefined;
    let done = false;
    const finish = (error?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      setWaker(undefined);
      if (error !== undefined) reject(error);
      else resolve();
      // Cancelled after the caller's next request is on its way: a handoff waits for that one.
      if (watcher !== undefined) {
        const done = watcher;
        setImmediate(() => cancelQuietly(done));
      }
    };
    const onAbort = (): void => finish(signal.reason);
    let timer = setTimeout(() => finish(), fallbackMs);
    signal.addEventListener("abort", onAbort, { once: true });
    setWaker(() => finish());
    if (signal.aborted) {
      finish(signal.reason);
      return;
    }
    const builder = client.watch();
    if (target.prefix) builder.prefix(target.key);
    else builder.key(target.key);
    builder
      .only("delete")
      .startRevision(target.fromRevision.toString())
      .create()
      .then(
        (created) => {
          if (done) {
            cancelQuietly(created);
            return;
          }
          watcher = created;
          created.on("delete", () => finish());
          created.on("error", () => finish());
        },
        // Could not watch (e.g. the revision was compacted): re-read the position soon.
        () => {
          if (done) return;
          clearTimeout(timer);
          timer = setTimeout(() => finish(), Math.min(fallbackMs, RETRY_WATCH_MS));
        },
      );
  });
}

const RETRY_WATCH_MS = 50;

function cancelQuietly(watcher: Watcher): void {
  watcher.cancel().catch(() => undefined);
}
