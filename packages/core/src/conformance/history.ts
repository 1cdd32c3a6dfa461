import type { LockMode } from "../backend.js";
import type { Lease } from "../lease.js";

/**
 * One hold of a lock, as a contender saw it. Times are milliseconds of the
 * host's monotonic clock (CLOCK_MONOTONIC through `process.hrtime`), which
 * every process and thread of one machine shares.
 *
 * The recorded interval lies inside the real hold: `acquiredAt` is taken
 * after the grant arrived, and the end before the release was sent or when
 * the lease signalled a loss. So two recorded intervals that overlap are a
 * real violation, never a measurement artefact.
 *
 * @group Recording
 */
export interface HoldRecord {
  /** Who held it: a process or task label. */
  readonly owner: string;
  readonly key: string;
  readonly mode: LockMode;
  /** The semaphore limit of the acquire (1 for a plain lock). */
  readonly limit: number;
  /** The fencing token, as a decimal string so records survive JSON. */
  readonly token: string;
  readonly acquiredAt: number;
  releasedAt?: number;
  lostAt?: number;
}

/**
 * A violation the checker found, with the holds involved.
 *
 * @group Checking
 */
export interface HistoryViolation {
  readonly kind: "overlap" | "token-order";
  readonly message: string;
  readonly holds: readonly HoldRecord[];
}

/**
 * Current time for history records: the host's monotonic clock, comparable
 * across local processes (`performance.timeOrigin + performance.now()` is
 * not: each process fixes its origin from the wall clock when it starts).
 *
 * @group Recording
 */
export function historyNow(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * Collects holds and checks them. Exported for tests of backends and applications.
 *
 * @group Recording
 */
export class History {
  readonly holds: HoldRecord[] = [];

  /**
   * Records that `lease` was just granted to `owner`; returns a function to
   * call right before releasing. A loss signalled by the lease ends the hold too.
   */
  begin(lease: Lease, owner: string, limit = 1): () => void {
    const record: HoldRecord = {
      owner,
      key: lease.key,
      mode: lease.mode,
      limit,
      token: lease.fencingToken.toString(),
      acquiredAt: historyNow(),
    };
    this.holds.push(record);
    const onAbort = (): void => {
      if (record.releasedAt === undefined && record.lostAt === undefined)
        record.lostAt = historyNow();
    };
    lease.signal.addEventListener("abort", onAbort, { once: true });
    return () => {
      lease.signal.removeEventListener("abort", onAbort);
      if (record.lostAt === undefined) record.releasedAt ??= historyNow();
    };
  }

  /** Adds records made elsewhere (e.g. by another process, sent as JSON). */
  add(...records: HoldRecord[]): void {
    this.holds.push(...records);
  }

  /** All violations; empty when the history is valid. */
  check(options?: CheckOptions): HistoryViolation[] {
    return checkHistory(this.holds, options);
  }

  /** Throws an Error naming the offending holds when the history is invalid. */
  assertValid(options?: CheckOptions): void {
    assertHistory(this.holds, options);
  }
}

/**
 * What the checker verifies.
 *
 * @group Checking
 */
export interface CheckOptions {
  /** Check that tokens strictly increase in grant order (default true). */
  fencing?: boolean;
}

/**
 * Verifies mutual exclusion (exclusive holds never overlap shared ones or more
 * than `limit` others; shared holds only overlap shared ones) and, with
 * fencing, that a hold that began after another ended has a greater token.
 *
 * @group Checking
 */
export function checkHistory(
  holds: readonly HoldRecord[],
  options: CheckOptions = {},
): HistoryViolation[] {
  const violations: HistoryViolation[] = [];
  const byKey = new Map<string, HoldRecord[]>();
  for (const hold of holds) {
    const list = byKey.get(hold.key);
    if (list === undefined) byKey.set(hold.key, [hold]);
    else list.push(hold);
  }
  for (const list of byKey.values()) {
    checkOverlaps(list, violations);
    if (options.fencing ?? true) checkTokens(list, violations);
  }
  return violations;
}

/**
 * Throws with the first violations and the holds involved.
 *
 * @group Checking
 */
export function assertHistory(holds: readonly HoldRecord[], options?: CheckOptions): void {
  const violations = checkHistory(holds, options);
  if (violations.length === 0) return;
  const shown = violations
    .slice(0, 3)
    .map((v) => `${v.message}\n${v.holds.map(describeHold).join("\n")}`);
  throw new Error(
    `history check failed: ${violations.length} violation(s) in ${holds.length} holds\n${shown.join("\n\n")}`,
  );
}

/** End of a recorded hold; an unfinished hold lasts forever. */
function holdEnd(hold: HoldRecord): number {
  const ends = [hold.releasedAt, hold.lostAt].filter((t): t is number => t !== undefined);
  return ends.length === 0 ? Number.POSITIVE_INFINITY : Math.min(...ends);
}

function checkOverlaps(list: HoldRecord[], violations: HistoryViolation[]): void {
  // Sweep over start/end events; at equal times ends go first (intervals are half-open).
  const events: Array<{ at: number; start: boolean; hold: HoldRecord }> = [];
  for (const hold of list) {
    events.push({ at: hold.acquiredAt, start: true, hold });
    events.push({ at: holdEnd(hold), start: false, hold });
  }
  events.sort((a, b) => a.at - b.at || Number(a.start) - Number(b.start));
  const exclusive = new Set<HoldRecord>();
  const shared = new Set<HoldRecord>();
  for (const { start, hold } of events) {
    const active = hold.mode === "shared" ? shared : exclusive;
    if (!start) {
      active.delete(hold);
      continue;
    }
    const conflict =
      hold.mode === "shared"
        ? first(exclusive)
        : (first(shared) ?? (exclusive.size >= hold.limit ? first(exclusive) : undefined));
    if (conflict !== undefined) {
      const what = hold.limit > 1 ? `more than ${hold.limit} holders` : "two holders";
      violations.push({
        kind: "overlap",
        message: `overlap on key "${hold.key}": ${what} at once`,
        holds: [conflict, hold],
      });
    }
    active.add(hold);
  }
}

function checkTokens(list: HoldRecord[], violations: HistoryViolation[]): void {
  const byStart = [...list].sort((a, b) => a.acquiredAt - b.acquiredAt);
  const byEnd = [...list].sort((a, b) => holdEnd(a) - holdEnd(b));
  let ended = 0;
  let highest: HoldRecord | undefined;
  for (const hold of byStart) {
    while (ended < byEnd.length && holdEnd(byEnd[ended]!) <= hold.acquiredAt) {
      const done = byEnd[ended++]!;
      if (highest === undefined || BigInt(done.token) > BigInt(highest.token)) highest = done;
    }
    if (highest !== undefined && BigInt(hold.token) <= BigInt(highest.token)) {
      violations.push({
        kind: "token-order",
        message: `fencing token did not increase on key "${hold.key}": ${hold.token} granted after ${highest.token}`,
        holds: [highest, hold],
      });
    }
  }
}

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}

function describeHold(hold: HoldRecord): string {
  const end =
    hold.lostAt !== undefined
      ? `lost at ${hold.lostAt.toFixed(3)}`
      : hold.releasedAt !== undefined
        ? `released at ${hold.releasedAt.toFixed(3)}`
        : "never released";
  return `  - owner=${hold.owner} mode=${hold.mode} limit=${hold.limit} token=${hold.token} acquired at ${hold.acquiredAt.toFixed(3)}, ${end}`;
}
