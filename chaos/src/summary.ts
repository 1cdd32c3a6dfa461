import type { HoldRecord } from "@locks/core/history";
import type { Timeline } from "./timeline.js";

/** One fault the nemesis injected. */
export interface FaultEvent {
  /** When it started, ms since the scenario started. */
  readonly at: number;
  /** When it ended (healed, SIGCONT; a kill's end is its start), ms since the scenario started. */
  readonly end: number;
  readonly kind: string;
  readonly target: string;
  readonly note?: string;
}

/** A check that failed, with the holds involved. */
export interface Violation {
  readonly kind: string;
  readonly message: string;
  readonly holds: readonly HoldRecord[];
}

/** What one scenario run produced: written to chaos/results/<name>.json. */
export interface ScenarioSummary {
  readonly name: string;
  readonly backend: string;
  readonly description: string;
  readonly seed: number;
  readonly durationMs: number;
  readonly clients: number;
  readonly ttlMs: number;
  readonly holds: number;
  readonly acquireTimeouts: number;
  readonly acquireErrors: number;
  /** Acquire failures other than LOCK_TIMEOUT, by error code, with one message. */
  readonly acquireErrorsByCode: Record<string, { count: number; example: string }>;
  readonly faults: Record<string, number>;
  readonly overlaps: {
    readonly total: number;
    /** The older holder had been told (lease.signal aborted) and the fenced store refused its write. */
    readonly staleRefused: number;
    /** The older holder had been told and its write landed before the newer holder's: the store never saw tokens go back. */
    readonly landedFirst: number;
    /** Allowed by the backend's documented limits under the fault injected. */
    readonly documented: number;
  };
  /** Grants whose token was not above an earlier finished hold's, where the backend documents it (data loss). */
  readonly tokenRegressions: number;
  /**
   * Per server fault kind: the first grant after the fault had a token above
   * every token granted before it (`higher`), or not (`notHigher`, a counter
   * lost with the data: a violation unless the backend documents it); once
   * healed, a client that lived through it was granted again (`resumed`), or
   * only clients started later were (`onlyNewClients`: a violation).
   */
  readonly tokensAfterFaults: Record<
    string,
    {
      readonly faults: number;
      readonly higher: number;
      readonly notHigher: number;
      readonly resumed: number;
      readonly onlyNewClients: number;
    }
  >;
  readonly writes: {
    readonly accepted: number;
    readonly refusedStale: number;
    readonly failed: number;
  };
  readonly lostLeases: {
    readonly count: number;
    /** Abort time minus the lease's local deadline, client wall clock (ms). */
    readonly lateMs: Stats | null;
    /** For holders that were SIGSTOPped: abort time minus SIGCONT (ms). */
    readonly afterResumeMs: Stats | null;
  };
  /** Holder SIGKILLed: time until another client held the key (ms). */
  readonly takeoverAfterKillMs: Stats | null;
  /**
   * How far each client's performance.timeOrigin was from the earliest one, measured against the
   * machine-wide monotonic clock (clients under libfaketime left out); history times are corrected by it.
   */
  readonly timeOriginSkewMs: Stats | null;
  readonly finalWrite: { readonly expected: string | null; readonly found: string | null };
  readonly violations: readonly Violation[];
  /** Documented limits that this run ran into, stated plainly. */
  readonly documentedLimits: readonly string[];
  readonly schedule: readonly FaultEvent[];
  readonly passed: boolean;
  /** Everything that happened, for the docs' timelines; written last in the results file. */
  readonly timeline: Timeline;
}

export interface Stats {
  readonly n: number;
  readonly p50: number;
  readonly max: number;
}

export function stats(values: readonly number[]): Stats | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const p50 = sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
  const round = (x: number): number => Math.round(x * 10) / 10;
  return { n: sorted.length, p50: round(p50), max: round(sorted.at(-1) ?? 0) };
}

function fmt(s: Stats | null): string {
  return s === null ? "-" : `${s.p50} / ${s.max}`;
}

/** A Markdown table of summaries (also printed by the CLI). */
export function summaryTable(summaries: readonly ScenarioSummary[]): string {
  const head =
    "| scenario | holds | faults | overlaps (stale refused / landed first / documented) | tokens went back | first token after a server fault above / not above the earlier ones | server faults after which the same clients were granted again | stale writes refused | violations | lost leases | loss after resume p50/max ms | takeover after kill p50/max ms | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|";
  const rows = summaries.map((s) => {
    const faults = Object.entries(s.faults)
      .map(([k, n]) => `${k}×${n}`)
      .join(", ");
    const after = Object.values(s.tokensAfterFaults);
    const tokensAfter = after.length
      ? `${after.reduce((n, c) => n + c.higher, 0)} / ${after.reduce((n, c) => n + c.notHigher, 0)}`
      : "-";
    const resumed = after.length
      ? `${after.reduce((n, c) => n + c.resumed, 0)} of ${after.reduce((n, c) => n + c.faults, 0)}`
      : "-";
    return `| ${s.name} | ${s.holds} | ${faults || "-"} | ${s.overlaps.total} (${s.overlaps.staleRefused} / ${s.overlaps.landedFirst} / ${s.overlaps.documented}) | ${s.tokenRegressions} | ${tokensAfter} | ${resumed} | ${s.writes.refusedStale} | ${s.violations.length} | ${s.lostLeases.count} | ${fmt(s.lostLeases.afterResumeMs)} | ${fmt(s.takeoverAfterKillMs)} | ${s.passed ? "pass" : "FAIL"} |`;
  });
  return [head, ...rows].join("\n");
}
