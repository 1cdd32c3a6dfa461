import type { BenchTable } from "../../bench/src/table.js";
import { columnOf, isNumeric, labelling } from "./bench-labels.js";
import { axisFor, valueText } from "./bench-scale.js";
import { escapeXml, svgRoot } from "./svg.js";

/*
 * The handoff gap distribution of each library of a handoff table, drawn as
 * a range per row: a box from p10 to p90, a whisker on to p99, the median
 * marked. One scale for the table's rows (logarithmic when they span orders
 * of magnitude: redlock's tens of ms beside a notified waiter's fraction of
 * one), so that a library and its peers and floor read side by side.
 */

/** One gap chart: the quantile columns of one handoff table, by their exact headers. */
export interface GapChartSpec {
  readonly suite: string;
  /** How the table's title starts. */
  readonly table: string;
  readonly p10: string;
  readonly median: string;
  readonly p90: string;
  readonly p99: string;
}

/** A row's gap quantiles, ms, exactly as in its table cells. */
export interface GapRange {
  /** The table row (0-based). */
  readonly row: number;
  readonly label: string;
  /** The other cells that tell rows with one label apart, or "". */
  readonly group: string;
  readonly p10: number;
  readonly median: number;
  readonly p90: number;
  readonly p99: number;
}

export interface GapChart {
  readonly table: string;
  readonly spec: GapChartSpec;
  readonly ranges: readonly GapRange[];
}

const QUANTILES = ["p10", "median", "p90", "p99"] as const;

/**
 * The gap charts of one table, from the specs that name it. A quantile
 * column the table lacks, or one that is not a number in every row, fails
 * the build.
 */
export function gapChartsOf(table: BenchTable, specs: readonly GapChartSpec[]): GapChart[] {
  return specs
    .filter((spec) => spec.suite === table.suite && table.title.startsWith(spec.table))
    .map((spec) => {
      const [p10, median, p90, p99] = QUANTILES.map((q) => {
        const index = columnOf(table, spec[q], "gap chart");
        if (!isNumeric(table, index)) {
          throw new Error(`benchmarks gap chart "${table.title}": "${spec[q]}" is not numeric`);
        }
        return index;
      }) as [number, number, number, number];
      const { label, groups } = labelling(table);
      const ranges = table.rows.map((row, r) => ({
        row: r,
        label: String(row[label]),
        group: groups.map((g) => String(row[g])).join(", "),
        p10: row[p10] as number,
        median: row[median] as number,
        p90: row[p90] as number,
        p99: row[p99] as number,
      }));
      return { table: table.title, spec, ranges };
    });
}

const WIDTH = 640;
const CHAR_WIDTH = 7.2;
const MARGIN = 18;
const LEGEND_HEIGHT = 26;
const GROUP_HEIGHT = 24;
const LABEL_HEIGHT = 17;
const RANGE_HEIGHT = 14;
const ROW_GAP = 9;
const AXIS_HEIGHT = 34;

/** Our rows in the brand colour, peers and floors in a neutral one. */
function isOurs(label: string): boolean {
  return label.startsWith("@locks/");
}

/**
 * The chart as a figure: caption, then inline SVG drawn with the theme's CSS
 * variables (bench.css). Each row: its library and its median and p99 as
 * text, then the range on the shared axis; a `<title>` on each range gives all
 * four quantiles.
 */
export function renderGapChart(chart: GapChart): string {
  const { spec } = chart;
  const values = chart.ranges.flatMap((r) => [r.p10, r.p99]);
  const axis = axisFor(values, MARGIN, WIDTH - MARGIN);
  const parts: string[] = [];
  // Legend: the glyph, then the two colours.
  const ly = 4;
  parts.push(
    `<rect x="0" y="${ly + 2}" width="26" height="10" rx="2" class="bench-range-box bench-ours"/>`,
    `<text x="32" y="${ly + 11}" class="bench-legend">p10 to p90</text>`,
    `<line x1="112" y1="${ly + 7}" x2="136" y2="${ly + 7}" class="bench-range-tail bench-ours"/>`,
    `<text x="142" y="${ly + 11}" class="bench-legend">to p99</text>`,
    `<rect x="204" y="${ly}" width="3" height="14" class="bench-range-median"/>`,
    `<text x="213" y="${ly + 11}" class="bench-legend">median</text>`,
    `<rect x="290" y="${ly + 2}" width="10" height="10" rx="2" class="bench-range-box bench-ours"/>`,
    `<text x="306" y="${ly + 11}" class="bench-legend">@locks</text>`,
    `<rect x="370" y="${ly + 2}" width="10" height="10" rx="2" class="bench-range-box bench-peer"/>`,
    `<text x="386" y="${ly + 11}" class="bench-legend">peer library or raw floor</text>`,
  );
  let y = LEGEND_HEIGHT;
  const top = y;
  let group: string | undefined;
  const rows: string[] = [];
  for (const range of chart.ranges) {
    if (range.group !== "" && range.group !== group) {
      group = range.group;
      rows.push(`<text x="0" y="${y + 16}" class="bench-group">${escapeXml(group)}</text>`);
      y += GROUP_HEIGHT;
    }
    const summary = `median ${valueText(range.median)} · p99 ${valueText(range.p99)} ms`;
    const room = Math.floor((WIDTH - summary.length * CHAR_WIDTH - 12) / CHAR_WIDTH);
    const label = range.label.length <= room ? range.label : `${range.label.slice(0, room - 1)}…`;
    rows.push(
      `<text x="0" y="${y + 12}" class="bench-label" data-row="${range.row}">${escapeXml(label)}</text>`,
      `<text x="${WIDTH}" y="${y + 12}" text-anchor="end" class="bench-value" data-row="${range.row}">${escapeXml(summary)}</text>`,
    );
    y += LABEL_HEIGHT;
    const [x10, x50, x90, x99] = [range.p10, range.median, range.p90, range.p99].map((v) =>
      axis.at(v),
    ) as [number, number, number, number];
    const mid = y + RANGE_HEIGHT / 2;
    const kind = isOurs(range.label) ? "bench-ours" : "bench-peer";
    const data = QUANTILES.map((q) => `data-${q}="${range[q]}"`).join(" ");
    const tip = `${range.group === "" ? "" : `${range.group}, `}${range.label}: p10 ${valueText(range.p10)} ms, median ${valueText(range.median)} ms, p90 ${valueText(range.p90)} ms, p99 ${valueText(range.p99)} ms`;
    rows.push(
      `<g class="bench-range ${kind}" data-row="${range.row}" ${data}><title>${escapeXml(tip)}</title>`,
      `<line x1="${r1(x90)}" y1="${r1(mid)}" x2="${r1(Math.max(x99, x90))}" y2="${r1(mid)}" class="bench-range-tail ${kind}"/>`,
      `<line x1="${r1(x99)}" y1="${r1(mid - 4)}" x2="${r1(x99)}" y2="${r1(mid + 4)}" class="bench-range-tail ${kind}"/>`,
      `<rect x="${r1(x10)}" y="${y + 2}" width="${r1(Math.max(1, x90 - x10))}" height="${RANGE_HEIGHT - 4}" rx="2" class="bench-range-box ${kind}"/>`,
      `<rect x="${r1(x50 - 1.5)}" y="${y}" width="3" height="${RANGE_HEIGHT}" class="bench-range-median"/>`,
      "</g>",
    );
    y += RANGE_HEIGHT + ROW_GAP;
  }
  // Grid lines under the ranges, tick labels under the plot.
  const grid = axis.ticks.map(
    (t) =>
      `<line x1="${r1(axis.at(t.value))}" y1="${top}" x2="${r1(axis.at(t.value))}" y2="${y}" class="bench-grid"/>`,
  );
  const labels = axis.ticks.map(
    (t) =>
      `<text x="${r1(axis.at(t.value))}" y="${y + 14}" text-anchor="middle" class="bench-tick">${escapeXml(t.label)}</text>`,
  );
  const axisTitle = `gap, ms${axis.log ? " (log scale)" : ""}`;
  labels.push(
    `<text x="${WIDTH}" y="${y + 30}" text-anchor="end" class="bench-axis-title">${axisTitle}</text>`,
  );
  const height = y + AXIS_HEIGHT;
  const columns = QUANTILES.map((q) => `<span class="bench-metric">${escapeXml(spec[q])}</span>`);
  const caption = `Gap from a release to the next grant per library: ${columns.join(", ")}; lower is better`;
  const plain = `handoff gap per library: p10 to p90, median, p99 in ms; lower is better`;
  return (
    `<figure class="bench-figure"><figcaption>${caption}</figcaption>` +
    svgRoot(
      "bench-gaps",
      { width: WIDTH, height },
      { label: `${chart.table}: ${plain}`, title: chart.table },
      `${parts.join("")}${grid.join("")}${rows.join("")}${labels.join("")}`,
    ) +
    "</figure>"
  );
}

/** A coordinate to one decimal: short SVG, no float noise. */
function r1(value: number): number {
  return Math.round(value * 10) / 10;
}
