import type { BenchTable } from "../../bench/src/table.js";
import { columnOf } from "./bench-labels.js";
import { axisFor, valueText } from "./bench-scale.js";
import { escapeXml, svgRoot } from "./svg.js";

/*
 * A sweep drawn as lines: one line per library (or backend) of a long-form
 * table (a row per library and x value), x on a log scale. The point it
 * carries: how a cost grows with the number of waiters.
 */

/** One line chart: which columns of one table give x, y and the line. */
export interface LineChartSpec {
  readonly suite: string;
  /** How the table's title starts. */
  readonly table: string;
  /** The column of the x values ("waiters"), numbers in every row. */
  readonly x: string;
  /** The plotted column; a row whose cell is not a number has no point (a stalled run). */
  readonly y: string;
  /** The column that names the line of a row ("library", "backend"). */
  readonly line: string;
  /** The y axis' unit, in words ("commands per handoff"). */
  readonly unit: string;
}

export interface LinePoint {
  /** The table row (0-based). */
  readonly row: number;
  readonly x: number;
  readonly y: number;
}

export interface Line {
  readonly label: string;
  readonly points: readonly LinePoint[];
}

export interface LineChart {
  readonly table: string;
  readonly spec: LineChartSpec;
  readonly lines: readonly Line[];
}

/**
 * The line charts of one table, from the specs that name it. A column the
 * table lacks, an x that is not a number, or a y column with no number at
 * all fails the build.
 */
export function lineChartsOf(table: BenchTable, specs: readonly LineChartSpec[]): LineChart[] {
  return specs
    .filter((spec) => spec.suite === table.suite && table.title.startsWith(spec.table))
    .map((spec) => {
      const x = columnOf(table, spec.x, "line chart");
      const y = columnOf(table, spec.y, "line chart");
      const line = columnOf(table, spec.line, "line chart");
      const byLabel = new Map<string, LinePoint[]>();
      table.rows.forEach((row, r) => {
        const xv = row[x];
        if (typeof xv !== "number") {
          throw new Error(`benchmarks line chart "${table.title}": "${spec.x}" is not numeric`);
        }
        const label = String(row[line]);
        const points = byLabel.get(label) ?? [];
        byLabel.set(label, points);
        const yv = row[y];
        if (typeof yv === "number") points.push({ row: r, x: xv, y: yv });
      });
      if ([...byLabel.values()].every((points) => points.length === 0)) {
        throw new Error(`benchmarks line chart "${table.title}": "${spec.y}" has no numbers`);
      }
      const lines = [...byLabel].map(([label, points]) => ({
        label,
        points: points.sort((a, b) => a.x - b.x),
      }));
      return { table: table.title, spec, lines };
    });
}

const WIDTH = 640;
const CHAR_WIDTH = 7.2;
const LEFT = 52;
const RIGHT = 24;
const PLOT_TOP = 22;
const PLOT_HEIGHT = 220;
const LEGEND_ROW = 20;
/** Distinct line colours (bench.css), in table order. */
const COLOURS = 6;

/** A line of a peer library or raw floor (dashed): a library not ours. Backends are all ours. */
function isPeer(spec: LineChartSpec, label: string): boolean {
  return spec.line === "library" && !label.startsWith("@locks/");
}

/**
 * The chart as a figure: caption, then inline SVG with the theme's colours
 * (bench.css): the y axis' ticks and title, the x axis' ticks and title,
 * each line with a marker per point (a `<title>` tooltip with its values),
 * and a legend under the plot.
 */
export function renderLineChart(chart: LineChart): string {
  const { spec } = chart;
  const points = chart.lines.flatMap((l) => l.points);
  const xAxis = axisFor(
    points.map((p) => p.x),
    LEFT + 12,
    WIDTH - RIGHT,
    true,
  );
  const bottom = PLOT_TOP + PLOT_HEIGHT;
  const yAxis = axisFor(
    points.map((p) => p.y),
    bottom,
    PLOT_TOP,
  );
  const parts: string[] = [
    `<text x="0" y="12" class="bench-axis-title">${escapeXml(`${spec.unit}${yAxis.log ? " (log scale)" : ""}`)}</text>`,
  ];
  for (const t of yAxis.ticks) {
    const y = r1(yAxis.at(t.value));
    parts.push(
      `<line x1="${LEFT}" y1="${y}" x2="${WIDTH - RIGHT + 8}" y2="${y}" class="bench-grid"/>`,
      `<text x="${LEFT - 6}" y="${y + 4}" text-anchor="end" class="bench-tick">${escapeXml(t.label)}</text>`,
    );
  }
  for (const t of xAxis.ticks) {
    const x = r1(xAxis.at(t.value));
    parts.push(
      `<line x1="${x}" y1="${PLOT_TOP}" x2="${x}" y2="${bottom}" class="bench-grid"/>`,
      `<text x="${x}" y="${bottom + 16}" text-anchor="middle" class="bench-tick">${escapeXml(t.label)}</text>`,
    );
  }
  parts.push(
    `<line x1="${LEFT}" y1="${bottom}" x2="${WIDTH - RIGHT + 8}" y2="${bottom}" class="bench-axis"/>`,
    `<text x="${WIDTH}" y="${bottom + 34}" text-anchor="end" class="bench-axis-title">${escapeXml(`${spec.x} (log scale)`)}</text>`,
  );
  chart.lines.forEach((line, i) => {
    const style = `bench-line-${i % COLOURS}${isPeer(spec, line.label) ? " bench-dashed" : ""}`;
    const xy = line.points.map((p) => `${r1(xAxis.at(p.x))},${r1(yAxis.at(p.y))}`);
    const marks = line.points.map((p) => {
      const tip = `${line.label}: ${valueText(p.x)} ${spec.x}, ${valueText(p.y)} ${spec.unit}`;
      return (
        `<circle cx="${r1(xAxis.at(p.x))}" cy="${r1(yAxis.at(p.y))}" r="4" class="bench-point bench-line-${i % COLOURS}" ` +
        `data-row="${p.row}" data-x="${p.x}" data-y="${p.y}"><title>${escapeXml(tip)}</title></circle>`
      );
    });
    parts.push(
      `<g class="bench-series" data-line="${escapeXml(line.label)}">`,
      `<polyline points="${xy.join(" ")}" class="bench-polyline ${style}"/>`,
      ...marks,
      "</g>",
    );
  });
  // Legend under the plot: entries flow left to right, wrapping at the width.
  let x = 0;
  let y = bottom + 48;
  for (const [i, line] of chart.lines.entries()) {
    const width = 30 + Math.ceil(line.label.length * CHAR_WIDTH) + 18;
    if (x > 0 && x + width > WIDTH) {
      x = 0;
      y += LEGEND_ROW;
    }
    const style = `bench-line-${i % COLOURS}${isPeer(spec, line.label) ? " bench-dashed" : ""}`;
    parts.push(
      `<line x1="${x}" y1="${y - 4}" x2="${x + 24}" y2="${y - 4}" class="bench-polyline ${style}"/>`,
      `<circle cx="${x + 12}" cy="${y - 4}" r="3.5" class="bench-point bench-line-${i % COLOURS}"/>`,
      `<text x="${x + 30}" y="${y}" class="bench-legend">${escapeXml(line.label)}</text>`,
    );
    x += width;
  }
  const height = y + 8;
  const caption =
    `<span class="bench-metric">${escapeXml(spec.y)}</span> by <span class="bench-metric">${escapeXml(spec.x)}</span>, ` +
    `a line per ${escapeXml(spec.line)}${chart.lines.some((l) => isPeer(spec, l.label)) ? " (@locks solid, peers dashed)" : ""}; ` +
    "lower is better, flat is what scales";
  return (
    `<figure class="bench-figure"><figcaption>${caption}</figcaption>` +
    svgRoot(
      "bench-lines",
      { width: WIDTH, height },
      {
        label: `${chart.table}: ${spec.y} by ${spec.x}, a line per ${spec.line}`,
        title: chart.table,
      },
      parts.join(""),
    ) +
    "</figure>"
  );
}

/** A coordinate to one decimal: short SVG, no float noise. */
function r1(value: number): number {
  return Math.round(value * 10) / 10;
}
