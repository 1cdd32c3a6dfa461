import type {
  OverlapVerdict,
  Timeline,
  TimelineFault,
  TimelineHold,
  TimelineProcess,
} from "../../../chaos/src/timeline.js";
import { escapeXml, svgRoot } from "../svg.js";
import { round1, seconds, tickLabel, tickStep, ticks, timeScale } from "./svg.js";

/*
 * One timeline drawing, as Jepsen draws its histories: a row per client
 * process, each hold a bar from grant to release or loss (coloured by how it
 * ended), server faults as bands across every row, faults on one process
 * (pause, kill, clock jump) on its row, stale writes the fence refused as a
 * cross on the holder's row, and the overlaps the checker accepted as bands
 * over both holds. The same code draws the whole run and a zoomed detail;
 * the detail also writes tokens on the bars and the reason of each overlap.
 * Colours come from timeline.css (the theme's variables: dark mode works).
 */

/**
 * The drawing's width in SVG units: about the content column at 1280 px (624 px beside the
 * outline), so that a unit is about a pixel there and the 11-unit text is read at 11 px.
 */
const WIDTH = 640;
/** Room for the row labels ("c12.34"). */
const LABEL_WIDTH = 50;
const PLOT_X = LABEL_WIDTH;
const PLOT_WIDTH = WIDTH - LABEL_WIDTH - 14;
/** A generous width of one character of the 11-unit text (the theme's font is narrower). */
const CHAR = 6.6;
const LANE = 14;
const LANES = 2;

interface Geometry {
  readonly row: number;
  readonly barY: number;
  readonly bar: number;
  readonly mark: number;
}
const OVERVIEW: Geometry = { row: 16, barY: 3, bar: 10, mark: 3.5 };
const DETAIL: Geometry = { row: 30, barY: 13, bar: 13, mark: 5 };

/** Words for a verdict, as the legend and captions use them. */
export const VERDICT_TEXT: Record<OverlapVerdict, string> = {
  "stale-refused": "stale write refused",
  "landed-first": "write landed first",
  documented: "documented limit",
  violation: "VIOLATION",
};

export interface DrawOptions {
  /** The window drawn, ms since the scenario started. */
  readonly from: number;
  readonly to: number;
  /** Taller rows, tokens on the bars and each overlap's reason written out. */
  readonly detail: boolean;
  /** The accessible name of the drawing. */
  readonly label: string;
  /** Moments marked with a dashed line and a label (a lease running out). */
  readonly markers?: readonly { readonly at: number; readonly text: string }[];
}

/** The holds, faults and overlaps a drawing shows: those that reach into its window. */
export interface Drawn {
  readonly processes: readonly TimelineProcess[];
  readonly holds: readonly TimelineHold[];
  readonly faults: readonly TimelineFault[];
  readonly refused: readonly TimelineHold[];
  readonly overlaps: Timeline["overlaps"];
}

const ownerOf = (h: TimelineHold): string => `${h.process}#${h.seq}`;
const holdEnd = (h: TimelineHold, t: Timeline): number => h.to ?? t.end;

/** What falls into the window [from, to]. */
export function inWindow(timeline: Timeline, from: number, to: number): Drawn {
  const reaches = (start: number, end: number): boolean => start <= to && end >= from;
  const processes = timeline.processes
    .filter((p) => reaches(p.spawned, p.killed ?? p.exited ?? timeline.end))
    .sort((a, b) => a.slot - b.slot || a.spawned - b.spawned);
  const shown = new Set(processes.map((p) => p.id));
  const holds = timeline.holds.filter(
    (h) => shown.has(h.process) && reaches(h.from, holdEnd(h, timeline)),
  );
  return {
    processes,
    holds,
    faults: timeline.faults.filter((f) => reaches(f.start, f.end)),
    refused: holds.filter((h) => h.write === "refused" && h.ack !== null && reaches(h.ack, h.ack)),
    overlaps: timeline.overlaps.filter((o) => reaches(o.from, o.to)),
  };
}

/** The drawing: `<svg class="timeline">`, scaled to its container through its viewBox. */
export function drawTimeline(timeline: Timeline, options: DrawOptions): string {
  const g = options.detail ? DETAIL : OVERVIEW;
  const drawn = inWindow(timeline, options.from, options.to);
  const scale = timeScale(options.from, options.to, PLOT_X, PLOT_WIDTH);
  const top = LANES * LANE + 6;
  const rowOf = new Map(drawn.processes.map((p, i) => [p.id, top + i * g.row]));
  const rowsBottom = top + drawn.processes.length * g.row;
  const overlapLane = options.detail ? LANE + 2 : 0;
  const axisY = rowsBottom + overlapLane + 4;
  const height = axisY + 22;
  const holdsByOwner = new Map(timeline.holds.map((h) => [ownerOf(h), h]));
  const number = new Map(timeline.faults.map((f, i) => [f, i + 1]));

  const parts: string[] = [];
  const step = tickStep(options.from, options.to, options.detail ? 8 : 10);
  for (const t of ticks(options.from, options.to, step)) {
    const x = scale.x(t);
    parts.push(
      `<line class="timeline-grid" x1="${x}" x2="${x}" y1="${top - 2}" y2="${axisY}"/>`,
      `<text class="timeline-tick" x="${x}" y="${axisY + 15}" text-anchor="middle">${tickLabel(t, step)}</text>`,
    );
  }
  parts.push(
    `<line class="timeline-axis" x1="${PLOT_X}" x2="${PLOT_X + PLOT_WIDTH}" y1="${axisY}" y2="${axisY}"/>`,
  );

  // Faults, each with its number in the lanes on top: a server or network fault is a band
  // across every row; a kill a mark on its process's row; another fault on one process (a
  // pause, its clock, its link) a dashed box on its row.
  const laneLabels: LabelRequest[] = [];
  for (const f of drawn.faults) {
    const n = number.get(f) ?? 0;
    const x = scale.clamp(f.start);
    const title = `<title>${escapeXml(faultTitle(f, n))}</title>`;
    const kind = escapeXml(f.kind);
    laneLabels.push({
      x,
      texts: [
        options.detail && f.process !== null ? `${f.kind} ${f.process}` : `${n} ${f.kind}`,
        `${n}`,
      ],
      title: faultTitle(f, n),
      required: true,
    });
    const row = f.process === null ? undefined : rowOf.get(f.process);
    if (row === undefined) {
      const width = Math.max(scale.clamp(f.end) - x, 1.5);
      parts.push(
        `<g class="timeline-fault" data-kind="${kind}">${title}<rect x="${x}" y="${top - 2}" width="${round1(width)}" height="${rowsBottom - top + 4}"/></g>`,
      );
    } else if (f.kind === "kill") {
      parts.push(
        `<g class="timeline-fault" data-kind="kill">${title}<line x1="${x}" x2="${x}" y1="${row}" y2="${row + g.row}"/><path d="M${x - 4} ${row - 1}h8l-4 5z"/></g>`,
      );
    } else {
      const width = Math.max(scale.clamp(f.end) - x, 1.5);
      parts.push(
        `<g class="timeline-fault timeline-fault-process" data-kind="${kind}">${title}<rect x="${x}" y="${row + 1}" width="${round1(width)}" height="${g.row - 2}"/></g>`,
      );
    }
  }

  // Process lives and row labels.
  for (const p of drawn.processes) {
    const y = rowOf.get(p.id) ?? 0;
    const x1 = scale.clamp(p.spawned);
    const x2 = scale.clamp(p.killed ?? p.exited ?? timeline.end);
    const mid = y + g.barY + g.bar / 2;
    parts.push(
      `<text class="timeline-label" x="0" y="${mid + 4}">${escapeXml(p.id)}</text>`,
      `<line class="timeline-life" x1="${x1}" x2="${x2}" y1="${mid}" y2="${mid}"/>`,
    );
  }

  // Overlaps the checker saw: a band over the interval on both holds' rows.
  const overlapLabels: LabelRequest[] = [];
  for (const o of drawn.overlaps) {
    const rows = [o.older, o.newer]
      .map((owner) => holdsByOwner.get(owner)?.process)
      .map((p) => (p === undefined ? undefined : rowOf.get(p)))
      .filter((y): y is number => y !== undefined);
    const x = scale.clamp(o.from);
    const width = round1(Math.max(scale.clamp(o.to) - x, 3));
    const why = VERDICT_TEXT[o.verdict];
    const title = `overlap ${o.older} and ${o.newer}, ${seconds(o.from)} to ${seconds(o.to)}: ${why}${o.limit ? ` (${o.limit})` : ""}`;
    const rects = rows.map(
      (y) => `<rect x="${round1(x - 1)}" y="${y}" width="${width}" height="${g.row}"/>`,
    );
    parts.push(
      `<g class="timeline-overlap" data-verdict="${o.verdict}"><title>${escapeXml(title)}</title>${rects.join("")}</g>`,
    );
    overlapLabels.push({ x, texts: [why], title });
  }

  // Holds.
  const rowLabels = new Map<string, LabelRequest[]>();
  for (const h of drawn.holds) {
    const y = (rowOf.get(h.process) ?? 0) + g.barY;
    const x = scale.clamp(h.from);
    const least = options.detail ? (h.end === "killed" ? 3 : 1) : 0.6;
    const width = round1(Math.max(scale.clamp(holdEnd(h, timeline)) - x, least));
    // In the overview a routine hold (released, its write accepted) is a sliver among thousands:
    // only the holds worth pointing at carry a tooltip there, which keeps the page's weight down.
    const routine = h.end === "released" && h.write === "accepted";
    const tooltip = options.detail || !routine ? `<title>${escapeXml(holdTitle(h))}</title>` : "";
    parts.push(
      `<rect class="timeline-hold" data-end="${h.end}" x="${x}" y="${y}" width="${width}" height="${g.bar}">${tooltip}</rect>`,
    );
    if (options.detail) {
      const list = rowLabels.get(h.process) ?? [];
      rowLabels.set(h.process, list);
      const texts =
        h.from < options.from
          ? [`token ${h.token}, granted at ${seconds(h.from)}`, `token ${h.token}`, h.token]
          : [`token ${h.token}`, h.token];
      list.push({ x, texts, title: holdTitle(h), weight: weight(h) });
    }
  }

  // Stale writes the fenced store refused: a cross on the holder's row, when the answer came.
  for (const h of drawn.refused) {
    const row = rowOf.get(h.process) ?? 0;
    const x = scale.x(h.ack ?? h.from);
    const y = round1(row + g.barY + g.bar / 2);
    const s = g.mark;
    parts.push(
      `<path class="timeline-refused" d="M${round1(x - s)} ${round1(y - s)}l${2 * s} ${2 * s}m0 ${-2 * s}l${-2 * s} ${2 * s}"><title>${escapeXml(`write of ${ownerOf(h)} with token ${h.token} refused by the fenced store at ${seconds(h.ack ?? h.from)}`)}</title></path>`,
    );
    if (options.detail) {
      const list = rowLabels.get(h.process) ?? [];
      rowLabels.set(h.process, list);
      list.push({ x: x + s + 2, texts: ["write refused"], title: "", weight: 3 });
    }
  }

  for (const m of options.markers ?? []) {
    if (m.at < options.from || m.at > options.to) continue;
    const x = scale.x(m.at);
    parts.push(
      `<line class="timeline-marker" x1="${x}" x2="${x}" y1="${top - 2}" y2="${rowsBottom}"><title>${escapeXml(`${m.text} at ${seconds(m.at)}`)}</title></line>`,
    );
    laneLabels.push({ x, texts: [m.text], title: `${m.text} at ${seconds(m.at)}`, weight: -1 });
  }
  parts.push(...labels(laneLabels, (lane) => 4 + lane * LANE + 10, LANES, "timeline-fault-label"));
  if (options.detail) {
    for (const [process, list] of rowLabels) {
      const y = (rowOf.get(process) ?? 0) + g.barY - 3;
      parts.push(...labels(list, () => y, 1, "timeline-token"));
    }
    parts.push(...labels(overlapLabels, () => rowsBottom + 12, 1, "timeline-overlap-label"));
  }

  return svgRoot(
    options.detail ? "timeline timeline-detail" : "timeline",
    { width: WIDTH, height },
    { label: options.label, title: options.label },
    parts.join(""),
  );
}

interface LabelRequest {
  readonly x: number;
  /** The preferred text first, then shorter ones to try when it does not fit. */
  readonly texts: readonly string[];
  readonly title: string;
  /** Higher goes first when labels compete for room. */
  readonly weight?: number;
  /** Drawn even where there is no room (a fault's number). */
  readonly required?: boolean;
}

/**
 * Places labels left to right in `lanes` lanes, each where it does not run
 * into another, trying shorter texts, then nudging the shortest to the right
 * of what is in the way; a label that finds no room at all is still drawn (on
 * the first lane: a number over a number beats a fault without one).
 * Weightier labels choose first.
 */
function labels(
  requests: readonly LabelRequest[],
  yOf: (lane: number) => number,
  lanes: number,
  cls: string,
): string[] {
  const taken: Array<Array<[number, number]>> = Array.from({ length: lanes }, () => []);
  const out: string[] = [];
  const order = [...requests].sort((a, b) => (b.weight ?? 0) - (a.weight ?? 0) || a.x - b.x);
  const right = PLOT_X + PLOT_WIDTH + 12;
  const free = (lane: number, start: number, end: number): boolean =>
    end <= right && (taken[lane] ?? []).every(([s, e]) => end + 3 <= s || start >= e + 3);
  const place = (r: LabelRequest, text: string, lane: number, start: number): void => {
    taken[lane]?.push([start, start + text.length * CHAR]);
    const title = r.title === "" ? "" : `<title>${escapeXml(r.title)}</title>`;
    out.push(
      `<text class="${cls}" x="${round1(start)}" y="${yOf(lane)}">${title}${escapeXml(text)}</text>`,
    );
  };
  const tryPlace = (r: LabelRequest): boolean => {
    for (const text of r.texts) {
      const width = text.length * CHAR;
      const start = Math.min(r.x, right - width);
      for (let lane = 0; lane < lanes; lane++) {
        if (free(lane, start, start + width)) {
          place(r, text, lane, start);
          return true;
        }
      }
    }
    // Nudged right past what is in the way, by at most 40 units.
    const text = r.texts.at(-1) ?? "";
    const width = text.length * CHAR;
    for (let lane = 0; lane < lanes; lane++) {
      const ends = (taken[lane] ?? []).map(([, e]) => e + 3).filter((e) => e > r.x && e < r.x + 40);
      for (const start of ends.sort((a, b) => a - b)) {
        if (free(lane, start, start + width)) {
          place(r, text, lane, start);
          return true;
        }
      }
    }
    return false;
  };
  for (const r of order) {
    if (!tryPlace(r) && r.required === true) {
      const text = r.texts.at(-1) ?? "";
      place(r, text, 0, Math.min(r.x, right - text.length * CHAR));
    }
  }
  return out;
}

/** Holds a detail labels first: the ones the story is about. */
function weight(h: TimelineHold): number {
  if (h.end === "lost" || h.end === "killed" || h.write === "refused") return 2;
  return 1;
}

/** A hold's tooltip: terse, as there are thousands of them on the page. */
function holdTitle(h: TimelineHold): string {
  const end =
    h.end === "open"
      ? "never reported its end"
      : `${h.end === "released" ? "released" : h.end === "lost" ? "lost (lease.signal aborted)" : "killed"} ${seconds(h.to ?? h.from)}`;
  const write =
    h.write === "none"
      ? "no write"
      : `write ${h.write}${h.ack === null ? "" : ` ${seconds(h.ack)}`}`;
  return `${h.process} #${h.seq}, token ${h.token}: granted ${seconds(h.from)}, ${end}; ${write}`;
}

/** A fault as its tooltip and the list under the overview give it. */
export function faultTitle(f: TimelineFault, n: number): string {
  const when =
    f.end > f.start ? `${seconds(f.start)} to ${seconds(f.end)}` : `at ${seconds(f.start)}`;
  return `${n}. ${f.kind} ${f.target}, ${when}${f.note ? `: ${f.note}` : ""}`;
}
