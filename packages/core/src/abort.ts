/**
 * Abort listeners that stay cheap when thousands of waits share one signal.
 *
 * The core hands every wait of a client with neither timeout nor signal the
 * same AbortSignal (the client's close signal), and `addEventListener` on an
 * AbortSignal is linear in the listeners already there (Node checks for
 * duplicates): one listener per wait would make n waiters cost O(n²). So each
 * signal gets one real listener that fans out to a set.
 */
interface Fanout {
  readonly callbacks: Set<{ readonly run: (reason: unknown) => void }>;
  readonly listener: () => void;
}

const fanouts = new WeakMap<AbortSignal, Fanout>();

/**
 * Calls `callback(signal.reason)` once when `signal` aborts, at once if it
 * already has. Returns a function that stops listening; call it when the
 * wait ends, so a shared signal does not collect dead callbacks.
 *
 * @group Waiting
 */
export function onAbort(signal: AbortSignal, callback: (reason: unknown) => void): () => void {
  if (signal.aborted) {
    callback(signal.reason);
    return () => {};
  }
  let fanout = fanouts.get(signal);
  if (fanout === undefined) {
    const callbacks: Fanout["callbacks"] = new Set();
    const listener = (): void => {
      fanouts.delete(signal);
      // One by one: a callback may end another wait (which then stops listening) while it runs.
      for (const entry of [...callbacks]) if (callbacks.delete(entry)) entry.run(signal.reason);
    };
    fanout = { callbacks, listener };
    fanouts.set(signal, fanout);
    signal.addEventListener("abort", listener, { once: true });
  }
  const entry = { run: callback };
  const { callbacks, listener } = fanout;
  callbacks.add(entry);
  return () => {
    if (!callbacks.delete(entry) || callbacks.size > 0) return;
    if (fanouts.get(signal)?.callbacks === callbacks) fanouts.delete(signal);
    signal.removeEventListener("abort", listener);
  };
}
