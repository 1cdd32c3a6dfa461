import { type KeyEvent, onAbort, sleep } from "@locks/core/backend";
import type { IDuplexStream, IWatchRequest, IWatchResponse, WatchClient } from "etcd3";
import { retryBackoff } from "./backoff.js";
import { type Calls, endStream } from "./calls.js";

type Stream = IDuplexStream<IWatchRequest, IWatchResponse>;

/** One watch on the backend's stream. */
export interface Watch {
  /** The revision the watch started after: every deletion after it is delivered. */
  readonly revision: bigint;
  /** Stops the watch (nothing is awaited). */
  cancel(): void;
}

/**
 * The backend's own watch stream, opened on first use and kept until
 * close(), each watch with an id chosen here (etcd 3.4+). A wait costs a
 * message on it, not a stream of its own. etcd3's shared watch manager is not
 * used: it takes the end of its stream for a failed member (resetting every
 * connection to it, keepalives included) whenever its last watcher goes, and
 * re-opens the stream on a timer of its own that outlives close().
 */
export class Watches {
  readonly #client: WatchClient;
  readonly #calls: Calls;
  #stream: Promise<Stream> | undefined;
  #nextId = 1;
  /** Each watch's handler of its replies; undefined: the stream broke. */
  readonly #watches = new Map<string, (reply: IWatchResponse | undefined) => void>();

  constructor(client: WatchClient, calls: Calls) {
    this.#client = client;
    this.#calls = calls;
  }

  /**
   * Watches the deletion of `key`, or of any key in `[key, rangeEnd)`.
   * Resolves once etcd confirmed the watch; rejects when the stream breaks
   * first, after `bound.timeoutMs`, or with `bound.signal`'s reason.
   * `onDelete` runs at each deletion with its revision and key, and once
   * with undefined when etcd cancels the watch or the stream breaks (the
   * watch is gone then: deletions from then on are missed). One watch's
   * deletions come in revision order.
   */
  watch(
    key: Buffer,
    rangeEnd: Buffer | undefined,
    onDelete: (revision: bigint | undefined, key: Buffer | undefined) => void,
    bound: { readonly signal: AbortSignal; readonly timeoutMs: number },
  ): Promise<Watch> {
    if (bound.signal.aborted) return Promise.reject(bound.signal.reason);
    const id = String(this.#nextId++);
    const cancel = (): void => this.#cancel(id);
    return new Promise<Watch>((resolve, reject) => {
      let confirmed = false;
      const fail = (error: unknown): void => {
        clearTimeout(timer);
        stopListening();
        cancel();
        reject(error);
      };
      this.#watches.set(id, (reply) => {
        if (confirmed) {
          // Cancelled by etcd (compaction, ...) or a broken stream: as good as a deletion.
          if (reply === undefined || reply.canceled) {
            this.#watches.delete(id);
            onDelete(undefined, undefined);
          } else {
            for (const event of reply.events) onDelete(BigInt(event.kv.mod_revision), event.kv.key);
          }
        } else if (reply === undefined || reply.canceled) {
          fail(new Error(`etcd refused the watch: ${reply?.cancel_reason ?? "the stream broke"}`));
        } else {
          confirmed = true;
          clearTimeout(timer);
          stopListening();
          resolve({ revision: BigInt(reply.header.revision), cancel });
        }
      });
      const { signal, timeoutMs } = bound;
      const timer = setTimeout(
        () => fail(new Error(`etcd did not confirm a watch within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const stopListening = onAbort(signal, fail);
      const range = rangeEnd !== undefined ? { range_end: rangeEnd } : {};
      this.#open().then((stream) => {
        if (this.#watches.has(id)) {
          stream.write({ create_request: { key, ...range, watch_id: id, filters: ["Noput"] } });
        }
      }, fail);
    });
  }

  /**
   * Follows the deletions in `[key, rangeEnd)` for a subscriber of the core
   * until the returned stop: "changed" at each one; "unsure" when the watch
   * is gone (etcd cancelled it, the stream broke), after which it watches
   * again, backing off, and says "changed" once it is back (anything may
   * have been missed meanwhile). Resolves once the first watch is confirmed.
   */
  async follow(
    key: Buffer,
    rangeEnd: Buffer | undefined,
    onChange: (event: KeyEvent) => void,
    bound: { readonly signal: AbortSignal; readonly timeoutMs: number },
  ): Promise<() => void> {
    let stopped = false;
    let current: Watch | undefined;
    const rewatch = async (): Promise<void> => {
      for (let backoff = retryBackoff(); !stopped; backoff = backoff.next(undefined)) {
        try {
          await sleep(backoff.duration, bound.signal);
          current = await this.watch(key, rangeEnd, onDelete, bound);
        } catch {
          if (bound.signal.aborted) return;
          continue;
        }
        if (stopped) current.cancel();
        else onChange("changed");
        return;
      }
    };
    const onDelete = (revision: bigint | undefined): void => {
      if (revision !== undefined) {
        onChange("changed");
        return;
      }
      current = undefined;
      if (stopped || bound.signal.aborted) return;
      onChange("unsure");
      void rewatch();
    };
    current = await this.watch(key, rangeEnd, onDelete, bound);
    return () => {
      stopped = true;
      current?.cancel();
    };
  }

  /**
   * Watches the deletion of `key` from `revision` on (a past revision is
   * replayed, so no deletion since is missed) and calls `onDelete` for it.
   * Nothing is awaited: a guard is a hint on top of a check that stays (an
   * extension reads the key), so a guard that etcd refuses or a stream
   * that breaks just ends it. Returns its cancel.
   */
  guard(key: Buffer, revision: bigint, onDelete: () => void): () => void {
    const id = String(this.#nextId++);
    this.#watches.set(id, (reply) => {
      if (reply === undefined || reply.canceled) this.#watches.delete(id);
      else if (reply.events.length > 0) onDelete();
    });
    this.#open().then(
      (stream) => {
        if (this.#watches.has(id)) {
          const create = { key, start_revision: revision.toString(), watch_id: id };
          stream.write({ create_request: { ...create, filters: ["Noput"] } });
        }
      },
      () => this.#watches.delete(id),
    );
    return () => this.#cancel(id);
  }

  /** Ends the stream (close() then cancels it, with every other call still open). */
  close(): void {
    void this.#stream?.then(
      (stream) => endStream(stream),
      () => undefined,
    );
  }

  #open(): Promise<Stream> {
    if (this.#stream !== undefined) return this.#stream;
    const opening = this.#client.watch(this.#calls.stream()).then(
      (stream) => {
        const broken = (): void => {
          if (this.#stream === opening) this.#stream = undefined;
          const handlers = [...this.#watches.values()];
          this.#watches.clear();
          for (const handle of handlers) handle(undefined);
        };
        stream
          .on("data", (reply) => this.#watches.get(reply.watch_id)?.(reply))
          .on("error", broken)
          .on("end", broken);
        return stream;
      },
      (error: unknown) => {
        this.#stream = undefined;
        throw error;
      },
    );
    this.#stream = opening;
    return opening;
  }

  #cancel(id: string): void {
    if (!this.#watches.delete(id)) return;
    void this.#stream?.then(
      (stream) => stream.write({ cancel_request: { watch_id: id } }),
      () => undefined,
    );
  }
}
