/**
 * Wraps `start` (connect a session, open a stream) so that callers arriving
 * while it runs share that run instead of starting another; once it settled,
 * the next call starts anew (a reconnect after the session died).
 *
 * @group Waiting
 */
export function singleFlight<T>(start: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  return () => {
    running ??= start().finally(() => {
      running = undefined;
    });
    return running;
  };
}
