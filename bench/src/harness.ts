import { readFileSync } from "node:fs";
import { type Backend, createLocks, type Locks, type LocksOptions } from "@locks/core";

/*
 * What the server suites (redis, etcd, postgres) share: contenders, and the
 * handoff run that makes every release pass the lock to a client already
 * waiting for it.
 */

/** Takes the lock (waiting as the library does) and resolves with its release. */
export type Acquire = () => Promise<() => Promise<unknown>>;

/** One contender: an acquire function and what to close afterwards. */
export interface Contender {
  readonly acquire: Acquire;
  readonly close: () => Promise<void>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A contender taking `key` through a client it shares with others: closing it closes nothing. */
export function clientContender(locks: Locks, key: string): Contender {
  return {
    acquire: async () => {
      const lease = await locks.acquire(key);
      return () => lease.release();
    },
    close: async () => {},
  };
}

/** A contender with a client of its own over `backend` (namespace "bench"), closed with it. */
export function locksContender(
  backend: Backend,
  key: string,
  options: Omit<LocksOptions, "namespace"> = {},
): Contender {
  const locks = createLocks(backend, { namespace: "bench", ...options });
  return { ...clientContender(locks, key), close: () => locks.close() };
}

/** One acquire + release of `contender`. */
export function cycle(contender: Contender): () => Promise<void> {
  return async () => {
    const release = await contender.acquire();
    await release();
  };
}

/** `n` contenders made one after the other (connections opened in turn, not all at once). */
export async function build<T>(n: number, make: (i: number) => Promise<T> | T): Promise<T[]> {
  const made: T[] = [];
  for (let i = 0; i < n; i++) made.push(await make(i));
  return made;
}

export async function closeAll(contenders: readonly Contender[]): Promise<void> {
  await Promise.allSettled(contenders.map((c) => c.close()));
}

export function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** The upper median (the middle of an odd count); NaN for none. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** How {@link handoffs} runs. */
export interface HandoffOptions {
  /** How long handoffs are counted. */
  readonly ms: number;
  /** How long every contender has to queue up before counting starts. */
  readonly queueMs: number;
  /**
   * When set, a holder keeps the lock until every other contender has been
   * waiting this long, so the next holder is a waiter, never a newcomer that
   * happens to arrive at the right moment.
   */
  readonly settleMs?: number;
  /** Counts every grant, counted or not, as it happens (to count over a window of one's own). */
  readonly live?: { grants: number };
  /**
   * Called right before counting starts and right before it stops (the
   * elapsed time is taken after `stop`): to read server counters over the
   * counted window.
   */
  readonly window?: { start(): unknown; stop(): unknown };
}

export interface HandoffResult {
  readonly perSecond: number;
  /** Median ms from the holder's release() call to the next holder's grant. */
  readonly gapMs: number;
  /** Every counted gap, ms, in the order they happened: for quantiles over several rounds. */
  readonly gaps: readonly number[];
  /** Handoffs counted. */
  readonly handoffs: number;
}

/**
 * The nearest-rank quantile `q` (0..1) of `values`: the smallest value with at
 * least q of them at or below it (so the p99 of fewer than 100 values is the
 * largest); NaN for none.
 */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
}

/** The gap quantiles a handoff table reports, in its column order: p10, median, p90, p99. */
export const GAP_COLUMNS = ["gap p10 (ms)", "median gap (ms)", "gap p90 (ms)", "gap p99 (ms)"];

/** The cells of {@link GAP_COLUMNS} for `gaps` (the median as {@link median} takes it). */
export function gapCells(gaps: readonly number[]): number[] {
  return [quantile(gaps, 0.1), median(gaps), quantile(gaps, 0.9), quantile(gaps, 0.99)];
}

/**
 * Every contender loops: acquire; (with `settleMs`, hold until every other
 * contender has waited that long); release; then wait until another
 * contender took the lock before asking again. So every release hands the
 * lock to a client that was already waiting (never back to the releaser);
 * the gap is the release call to that client's grant.
 */
export async function handoffs(
  contenders: readonly Contender[],
  options: HandoffOptions,
): Promise<HandoffResult> {
  const n = contenders.length;
  const waitingSince = new Array<number>(n).fill(Number.POSITIVE_INFINITY);
  let stop = false;
  let counting = false;
  let counted = 0;
  let lastHolder = -1;
  let releasedAt = 0;
  const gaps: number[] = [];
  let onGrant: Array<() => void> = [];
  const someoneElseHolds = (me: number): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (stop || lastHolder !== me) resolve();
        else onGrant.push(check);
      };
      check();
    });
  const othersWaiting = async (me: number, settleMs: number): Promise<void> => {
    while (!stop) {
      let latest = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < n; j++)
        if (j !== me) latest = Math.max(latest, waitingSince[j] as number);
      const due = latest === Number.POSITIVE_INFINITY ? 0.5 : latest + settleMs - performance.now();
      if (due <= 0) return;
      await sleep(due);
    }
  };
  const loops = contenders.map(async (contender, me) => {
    while (!stop) {
      waitingSince[me] = performance.now();
      const release = await contender.acquire();
      waitingSince[me] = Number.POSITIVE_INFINITY;
      if (counting && lastHolder !== -1 && lastHolder !== me) {
        gaps.push(performance.now() - releasedAt);
        counted++;
      }
      if (options.live !== undefined) options.live.grants++;
      lastHolder = me;
      const waiting = onGrant;
      onGrant = [];
      for (const wake of waiting) wake();
      if (options.settleMs !== undefined) await othersWaiting(me, options.settleMs);
      releasedAt = performance.now();
      await release();
      await someoneElseHolds(me);
    }
  });
  await sleep(options.queueMs);
  await options.window?.start();
  counting = true;
  const start = performance.now();
  await sleep(options.ms);
  await options.window?.stop();
  counting = false;
  const elapsed = performance.now() - start;
  stop = true;
  for (const wake of onGrant) wake();
  onGrant = [];
  await Promise.all(loops);
  return { perSecond: (counted * 1000) / elapsed, gapMs: median(gaps), gaps, handoffs: counted };
}

const CLOCK_TICKS = 100;

/** user + system CPU time of a local process (all its threads), in µs; undefined when /proc cannot tell. */
export function processCpuUs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** CPU µs the processes used between two readings; undefined when /proc could not tell for one. */
export function cpuSpent(
  before: ReadonlyArray<number | undefined>,
  after: ReadonlyArray<number | undefined>,
): number | undefined {
  return after.length > 0 && after.every((v, i) => v !== undefined && before[i] !== undefined)
    ? after.reduce<number>((total, v, i) => total + v! - before[i]!, 0)
    : undefined;
}
