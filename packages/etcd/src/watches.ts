import type { IDuplexStream, IWatchRequest, IWatchResponse, WatchClient } from "etcd3";
import type { Calls } from "./calls.js";

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
  created: { resolve: (revision: bigint) => void; reject: (error: unknown) => void } | undefined;
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
   * Resolves once etcd confirmed the watch. `onDelete` runs at each deletion,
   * and once when the stream breaks (the watch is gone then).
   */
  async watch(key: Buffer, rangeEnd: Buffer | undefined, onDelete: () => void): Promise<Watch> {
    const stream = await this.#open();
    const id = String(this.#nextId++);
    const revision = await new Promise<bigint>((resolve, reject) => {
      if (this.#stream !== stream) {
        reject(new Error("the watch stream broke"));
        return;
      }
      this.#watches.set(id, { onDelete, created: { resolve, reject } });
      stream.write({
        create_request: {
          key,
          ...(rangeEnd !== undefined ? { range_end: rangeEnd } : {}),
          watch_id: id,
          filters: ["Noput"],
        },
      });
    });
    return { revision, cancel: () => this.#cancel(id) };
  }

  /** Ends the stream; the server ends it once asked (or close's cancellation of every call does). */
  close(): void {
    this.#closed = true;
    const stream = this.#stream;
    this.#broken(new Error("the etcd backend was closed"));
    if (stream !== undefined) endQuietly(stream);
  }

  #open(): Promise<Stream> {
    if (this.#closed) return Promise.reject(new Error("the etcd backend was closed"));
    if (this.#stream !== undefined) return Promise.resolve(this.#stream);
    this.#opening ??= this.#client.watch(this.#calls.stream()).then(
      (stream) => {
        this.#opening = undefined;
        if (this.#closed) {
          endQuietly(stream);
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
    if (watch.created !== undefined) {
      const created = watch.created;
      watch.created = undefined;
      if (reply.canceled) {
        this.#watches.delete(reply.watch_id);
        created.reject(new Error(`etcd refused the watch: ${reply.cancel_reason}`));
      } else {
        created.resolve(BigInt(reply.header.revision));
      }
      return;
    }
    if (reply.canceled) {
      // Cancelled by etcd (compaction, ...): as good as a deletion, the waiter re-reads.
      this.#watches.delete(reply.watch_id);
      watch.onDelete();
      return;
    }
    if (reply.events.length > 0) watch.onDelete();
  }

  #cancel(id: string): void {
    if (!this.#watches.delete(id)) return;
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
      if (watch.created !== undefined) watch.created.reject(error);
      else watch.onDelete();
    }
  }
}

function endQuietly(stream: Stream): void {
  try {
    stream.end();
  } catch {
    // already closed
  }
}
