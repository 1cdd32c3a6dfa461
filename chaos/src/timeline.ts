/**
 * The history of one scenario run, as it happened: which client processes
 * lived when, every hold with how it ended and what became of its write, every
 * fault from its start to its end, and every overlap the checker saw with its
 * verdict. The docs draw their timelines from it. All times are milliseconds
 * since the scenario started, on the parent's monotonic base (CLOCK_MONOTONIC;
 * clients' times are corrected to it), rounded to 0.1 ms.
 */

/** One client process (a killed client is replaced by a new process in the same slot). */
export interface TimelineProcess {
  /** `c<slot>.<generation>`, as in hold owners ("c2.3#17" is hold 17 of process c2.3). */
  readonly id: string;
  readonly slot: number;
  readonly spawned: number;
  /** When the process exited (null: still running when the run ended, which is a hang). */
  readonly exited: number | null;
  /** When the parent SIGKILLed it (a kill fault, or a hang), else null. */
  readonly killed: number | null;
}

/**
 * How a hold ended: released by its holder; lost (lease.signal aborted: the
 * holder was told); killed (the process died holding it); open (granted, but
 * its process never reported its end).
 */
export type HoldEnd = "released" | "lost" | "killed" | "open";

/** What the fenced store said to the hold's write; none: the holder never wrote (killed). */
export type WriteResult = "accepted" | "refused" | "failed" | "none";

export interface TimelineHold {
  readonly process: string;
  /** The hold's number in its process; `${process}#${seq}` is its owner in the checker. */
  readonly seq: number;
  readonly token: string;
  /** When the grant arrived. */
  readonly from: number;
  /** When it was released, lost or killed (null when open). */
  readonly to: number | null;
  readonly end: HoldEnd;
  readonly write: WriteResult;
  /** When the fenced store's answer arrived (null: no write). */
  readonly ack: number | null;
}

/**
 * One fault. pause: SIGSTOP to SIGCONT; kill: an instant; server and network
 * faults: from the start of the injection until it was healed; clock jump:
 * from rewriting the offset until libfaketime surely read it.
 */
export interface TimelineFault {
  readonly kind: string;
  readonly target: string;
  /** The client process it hit (pause, kill, clock jump), else null. */
  readonly process: string | null;
  readonly start: number;
  readonly end: number;
  readonly note?: string;
}

/**
 * What the checker made of two holds that overlapped. stale-refused: the older
 * holder was told and the fenced store refused its write; landed-first: it was
 * told and its write landed before the newer holder's; documented: allowed by
 * a documented limit of the backend under the fault injected; violation.
 */
export type OverlapVerdict = "stale-refused" | "landed-first" | "documented" | "violation";

export interface TimelineOverlap {
  readonly verdict: OverlapVerdict;
  /** Owners (`process#seq`) of the older and the newer hold. */
  readonly older: string;
  readonly newer: string;
  /** The overlapping interval. */
  readonly from: number;
  readonly to: number;
  /** For `documented`: the limit's text. */
  readonly limit?: string;
}

export interface Timeline {
  /** When the run ended: every client had exited (or was given up on). */
  readonly end: number;
  readonly processes: readonly TimelineProcess[];
  /** In grant order. */
  readonly holds: readonly TimelineHold[];
  /** In start order. */
  readonly faults: readonly TimelineFault[];
  readonly overlaps: readonly TimelineOverlap[];
}

/** A time on the parent's monotonic clock as ms since `origin`, to 0.1 ms. */
export function relativeMs(at: number, origin: number): number {
  return Math.round((at - origin) * 10) / 10;
}

/** Counts a summary states, recomputed from a timeline (a test holds the two together). */
export function timelineCounts(timeline: Timeline): {
  holds: number;
  refused: number;
  overlaps: Record<OverlapVerdict, number>;
} {
  const overlaps: Record<OverlapVerdict, number> = {
    "stale-refused": 0,
    "landed-first": 0,
    documented: 0,
    violation: 0,
  };
  for (const o of timeline.overlaps) overlaps[o.verdict]++;
  return {
    holds: timeline.holds.filter((h) => h.end !== "open").length,
    refused: timeline.holds.filter((h) => h.write === "refused").length,
    overlaps,
  };
}

/**
 * A results file: the summary as indented JSON, then its timeline last, one
 * line per process, hold, fault and overlap (thousands of holds, indented
 * field by field, would make the file ten times larger and no easier to read).
 */
export function formatResults(summary: { readonly timeline: Timeline }): string {
  const { timeline, ...rest } = summary;
  const head = JSON.stringify(rest, null, 2).replace(/\n}$/, "");
  const list = (name: string, items: readonly unknown[], last = false): string => {
    const lines = items.map((item) => `      ${JSON.stringify(item)}`).join(",\n");
    const body = items.length === 0 ? "[]" : `[\n${lines}\n    ]`;
    return `    "${name}": ${body}${last ? "" : ","}`;
  };
  return [
    `${head},`,
    `  "timeline": {`,
    `    "end": ${JSON.stringify(timeline.end)},`,
    list("processes", timeline.processes),
    list("faults", timeline.faults),
    list("overlaps", timeline.overlaps),
    list("holds", timeline.holds, true),
    "  }",
    "}",
    "",
  ].join("\n");
}
