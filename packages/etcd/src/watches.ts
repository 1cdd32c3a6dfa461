import { onAbort } from "@locks/core/backend";
import type { IDuplexStream, IWatchRequest, IWatchResponse, WatchClient } from "etcd3";
import { type Calls, endStream } from "./calls.js";

type Stream = IDuplexStream<IWatchRequest, IWatchResponse>;

/** One watch on the backend's stream. */
export interface Watch {
  /** The revision the watch started after: every deletion after it is delivered. */
  readonly revision: bigint;
  /** Stops the watch (nothing is awaited). */
  cancel(): void;
}

interface Registered {
  readonly onDelete: () => void;
  /** Until etcd confirmed the watch. */
  created: ((revision: bigint) => void) | undefined;
  refused: (error: unknown) => void;
  sent: boolean;
}

/**
 * The backend's own watch stream, opened on first use and kept until
 * close(). etcd3's shared watch manager is not used: it takes the end of its
 * stream for a failed member (resetting every connection to it, keepalives
 * included) whenever its last watcher goes, and it re-opens the stream on a
 * timer of its own that outlives close(). Watches carry ids chosen here
 * (etcd 3.4+), so replies need no ordering.
 */
export class WatchStream {
  readonly #client: WatchClient;
  readonly #calls: Calls;
  #stream: Stream | undefined;
  #opening: Promise<Stream> | undefined;
  #nextId = 1;
  readonly #watches = new Map<string, Registered>();
  #closed = false;

  constructor(client: WatchClient, calls: Calls) {
    this.#client = client;
    this.#calls = calls;
  }

  /**
   * Watches the deletion of `key`, or of any key in `[key, rangeEnd)`.
   * Resolves once etcd confirmed the watch; rejects when the stream breaks
   * first, after `timeoutMs`, or with `signal.reason`. `onDelete` runs at each
   * deletion, and once when the stream breaks (the watch is gone then).
   */
  watch(
    key: Buffer,
    rangeEnd: Buffer | undefined,
    onDelete: () => void,
    bound?: { readonly signal: AbortSignal; readonly timeoutMs: number },
  ): Promise<Watch> {
    if (bound?.signal.aborted) return Promise.reject(bound.signal.reason);
    const id = String(this.#nextId++);
    return new Promise<Watch>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let stopListening = (): void => {};
      const fail = (error: unknown): void => {
        clearTimeout(timer);
        stopListening();
        this.#cancel(id);
        reject(error);
      };
      const watch: Registered = {
        onDelete,
        created: (revision) => {
          clearTimeout(timer);
          stopListening();
          resolve({ revision, cancel: () => this.#cancel(id) });
        },
        refused: fail,
        sent: false,
      };
      this.#watches.set(id, watch);
      if (bound !== undefined) {
        const { signal, timeoutMs } = bound;
        timer = setTimeout(
          () => fail(new Error(`etcd did not confirm a watch within ${timeoutMs} ms`)),
          timeoutMs,
        );
        stopListening = onAbort(signal, fail);
      }
      this.#open().then((stream) => {
        if (this.#watches.get(id) !== watch) return;
        watch.sent = true;
        const range = rangeEnd !== undefined ? { range_end: rangeEnd } : {};
        stream.write({ create_request: { key, ...range, watch_id: id, filters: ["Noput"] } });
      }, fail);
    });
  }

  /** Ends the stream; the server ends it once asked (or close's cancellation of every call does). */
  close(): void {
    this.#closed = true;
    const stream = this.#stream;
    this.#broken(new Error("the etcd backend was closed"));
    if (stream !== undefined) endStream(stream);
  }

  #open(): Promise<Stream> {
    if (this.#closed) return Promise.reject(new Error("the etcd backend was closed"));
    if (this.#stream !== undefined) return Promise.resolve(this.#stream);
    this.#opening ??= this.#client.watch(this.#calls.stream()).then(
      (stream) => {
        this.#opening = undefined;
        if (this.#closed) {
          endStream(stream);
          throw new Error("the etcd backend was closed");
        }
        this.#stream = stream;
        stream
          .on("data", (reply) => this.#onReply(reply))
          .on("error", (error) => {
            if (this.#stream === stream) this.#broken(error);
          })
          .on("end", () => {
            if (this.#stream === stream) this.#broken(new Error("the watch stream ended"));
          });
        return stream;
      },
      (error: unknown) => {
        this.#opening = undefined;
        throw error;
      },
    );
    return this.#opening;
  }

  #onReply(reply: IWatchResponse): void {
    const watch = this.#watches.get(reply.watch_id);
    if (watch === undefined) return;
    const created = watch.created;
    watch.created = undefined;
    if (reply.canceled) {
      // Refused, or cancelled by etcd later (compaction, ...): as good as a deletion, the waiter re-reads.
      this.#watches.delete(reply.watch_id);
      if (created !== undefined)
        watch.refused(new Error(`etcd refused the watch: ${reply.cancel_reason}`));
      else watch.onDelete();
    } else if (created !== undefined) {
      created(BigInt(reply.header.revision));
    } else if (reply.events.length > 0) {
      watch.onDelete();
    }
  }

  #cancel(id: string): void {
    const watch = this.#watches.get(id);
    if (watch === undefined || !this.#watches.delete(id) || !watch.sent) return;
    try {
      this.#stream?.write({ cancel_request: { watch_id: id } });
    } catch {
      // the stream is closing: the watch ends with it
    }
  }

  /** The stream is gone: every watch on it ends (pending ones fail, live ones fire). */
  #broken(error: unknown): void {
    this.#stream = undefined;
    const watches = [...this.#watches.values()];
    this.#watches.clear();
    for (const watch of watches) {
      if (watch.created !== undefined) watch.refused(error);
      else watch.onDelete();
    }
  }
}
