/**
 * Resolves once every promise in `promises` has settled, or after `ms`,
 * whichever comes first; never rejects and leaves no timer behind. For
 * close(): a server that stopped answering must not hold a shutdown up.
 *
 * @group Waiting
 */
export async function settledWithin(
  promises: Promise<unknown> | readonly Promise<unknown>[],
  ms: number,
): Promise<void> {
  const all = Array.isArray(promises) ? promises : [promises as Promise<unknown>];
  if (all.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  await Promise.race([Promise.allSettled(all), bound]);
  clearTimeout(timer);
}
