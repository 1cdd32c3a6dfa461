import { onAbort } from "@locks/core/backend";
import type { WatchClient } from "etcd3";
import { type CallOptions, endStream } from "./calls.js";

/** One watch, on a stream of its own. */
export interface Watch {
  /** The revision the watch started after: every deletion after it is delivered. */
  readonly revision: bigint;
  /** Stops the watch: its stream is ended (nothing is awaited). */
  cancel(): void;
}

/**
 * Watches the deletion of `key`, or of any key in `[key, rangeEnd)`, on a
 * stream of its own (etcd3's shared watch manager is not used: it takes the
 * end of its stream for a failed member, resetting every connection to it,
 * keepalives included, and re-opens it on a timer that outlives close()).
 * Resolves once etcd confirmed the watch; rejects when the stream fails
 * first, after `bound.timeoutMs`, or with `bound.signal`'s reason.
 * `onDelete` runs at each deletion, and once when the stream breaks (the
 * watch is gone then).
 */
export async function watchDeletions(
  client: WatchClient,
  options: CallOptions,
  key: Buffer,
  rangeEnd: Buffer | undefined,
  onDelete: () => void,
  bound?: { readonly signal: AbortSignal; readonly timeoutMs: number },
): Promise<Watch> {
  const stream = await client.watch(options);
  let state: "creating" | "live" | "cancelled" = "creating";
  const cancel = (): void => {
    state = "cancelled";
    endStream(stream, true);
  };
  return new Promise<Watch>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let stopListening = (): void => {};
    const settle = (error: unknown, revision?: bigint): void => {
      if (state !== "creating") return;
      clearTimeout(timer);
      stopListening();
      if (revision === undefined) {
        cancel();
        reject(error);
      } else {
        state = "live";
        resolve({ revision, cancel });
      }
    };
    const broken = (error: unknown): void => {
      settle(error);
      // A watch cancelled by etcd (compaction, ...) or a broken stream: as good as a deletion.
      if (state === "live") onDelete();
      state = "cancelled";
    };
    stream
      .on("data", (reply) => {
        if (state === "live" && reply.canceled) broken(new Error(reply.cancel_reason));
        else if (state === "live" && reply.events.length > 0) onDelete();
        else if (reply.canceled)
          settle(new Error(`etcd refused the watch: ${reply.cancel_reason}`));
        else settle(undefined, BigInt(reply.header.revision));
      })
      .on("error", broken)
      .on("end", () => broken(new Error("the watch stream ended")));
    if (bound !== undefined) {
      const { signal, timeoutMs } = bound;
      timer = setTimeout(
        () => settle(new Error(`etcd did not confirm a watch within ${timeoutMs} ms`)),
        timeoutMs,
      );
      stopListening = onAbort(signal, settle);
    }
    const range = rangeEnd !== undefined ? { range_end: rangeEnd } : {};
    if (state === "creating")
      stream.write({ create_request: { key, ...range, filters: ["Noput"] } });
  });
}
