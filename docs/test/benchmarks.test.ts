import { describe, expect, it } from "vitest";
import type { BenchTable } from "../../bench/src/table.js";
import { type GapChart, gapChartsOf, renderGapChart } from "../scripts/bench-gaps.js";
import { type LineChart, lineChartsOf, renderLineChart } from "../scripts/bench-lines.js";
import {
  CHARTS,
  type Chart,
  chartsOf,
  directionText,
  GAP_CHARTS,
  LINE_CHARTS,
  readResults,
  renderChart,
  renderResults,
  wrapLines,
} from "../scripts/benchmarks.js";

/*
 * The benchmark page's charts, checked against the results file the docs
 * build renders (bench/results/latest.json): every chart plots the columns
 * its spec (and so its caption) names, no two charts plot one series, and
 * ratios say faster or slower by their direction. The built page itself is
 * checked in Chromium by site.test.ts.
 */

const results = readResults();
const tables: BenchTable[] = Object.values(results?.suites ?? {}).flat();
const charts: Chart[] = tables.flatMap((table) => chartsOf(table));
const gapCharts: GapChart[] = tables.flatMap((table) => gapChartsOf(table, GAP_CHARTS));
const lineCharts: LineChart[] = tables.flatMap((table) => lineChartsOf(table, LINE_CHARTS));

/** The table a chart was drawn from. */
function tableOf(title: string): BenchTable {
  const table = tables.find((t) => t.title === title);
  if (table === undefined) throw new Error(`no table ${title}`);
  return table;
}

/** A cell of `table` by row and header. */
function cell(table: BenchTable, row: number, header: string): string | number | undefined {
  return table.rows[row]?.[table.columns.indexOf(header)];
}

describe("benchmark charts over bench/results/latest.json", () => {
  it("the results file is there, with a chart for every suite", () => {
    expect(results).toBeDefined();
    const suites = new Set(charts.map((c) => c.spec.suite));
    expect([...suites].sort()).toEqual(["etcd", "file", "mysql", "postgres", "redis", "thread"]);
  });

  it("every spec matches a table of the results", () => {
    for (const spec of CHARTS) {
      expect(
        charts.some((c) => c.spec === spec),
        `${spec.suite}: ${spec.table}`,
      ).toBe(true);
    }
  });

  it("each chart plots exactly the columns it names, one bar per row and column", () => {
    for (const chart of charts) {
      const table = tables.find((t) => t.title === chart.table);
      if (table === undefined) throw new Error(`no table ${chart.table}`);
      expect(chart.bars.length).toBe(table.rows.length * chart.spec.columns.length);
      for (const bar of chart.bars) {
        expect(chart.spec.columns).toContain(bar.column);
        const column = table.columns.indexOf(bar.column);
        expect(bar.value, `${chart.table} / ${bar.column} / row ${bar.row}`).toBe(
          table.rows[bar.row]?.[column],
        );
      }
    }
  });

  it("no two charts plot the same series, and no series is one repeated value", () => {
    const series = charts.flatMap((c) => c.spec.columns.map((column) => `${c.table} / ${column}`));
    expect(new Set(series).size).toBe(series.length);
    for (const chart of charts) {
      for (const column of chart.spec.columns) {
        const values = chart.bars.filter((b) => b.column === column).map((b) => b.value);
        expect(new Set(values).size, `${chart.table} / ${column}`).toBeGreaterThan(1);
      }
    }
    // Two charts with the very same numbers are one series under two names.
    const numbers = charts.flatMap((c) =>
      c.spec.columns.map((column) =>
        JSON.stringify(c.bars.filter((b) => b.column === column).map((b) => b.value)),
      ),
    );
    expect(new Set(numbers).size).toBe(numbers.length);
  });

  it("bars are labelled by library (or case), grouped by file system where a library repeats", () => {
    for (const chart of charts) {
      const table = tables.find((t) => t.title === chart.table);
      if (table === undefined) throw new Error(`no table ${chart.table}`);
      expect(["library", "case"]).toContain(chart.labelColumn);
      const label = table.columns.indexOf(chart.labelColumn);
      for (const bar of chart.bars) expect(bar.label).toBe(table.rows[bar.row]?.[label]);
      // Each row is told apart from the others by its label and group.
      const names = new Set(chart.bars.map((b) => `${b.group} / ${b.label}`));
      expect(names.size).toBe(table.rows.length);
    }
    const file = charts.find((c) => c.table.startsWith("Uncontended acquire + release"));
    expect(file?.bars.map((b) => b.group)).toContain("/dev/shm (tmpfs)");
    expect(file?.bars[0]?.label).toBe("proper-lockfile lock()/release()");
  });

  it("the SVG of each chart names its columns in the caption and keeps value labels inside", () => {
    for (const chart of charts) {
      const html = renderChart(chart);
      const caption = /<figcaption>(.*)<\/figcaption>/.exec(html)?.[1] ?? "";
      const named = [...caption.matchAll(/<span class="bench-metric">([^<]*)<\/span>/g)].map(
        (m) => m[1],
      );
      expect(named.map((n) => textOf(n ?? ""))).toEqual(chart.spec.columns);
      const width = Number(/viewBox="0 0 (\d+) /.exec(html)?.[1]);
      for (const m of html.matchAll(/<text x="(\d+)"[^>]*class="bench-value"[^>]*>([^<]*)</g)) {
        // 7.2 px per character is wider than the theme's 12 px digits and letters.
        expect(Number(m[1]) + (m[2]?.length ?? 0) * 7.2, m[2]).toBeLessThanOrEqual(width);
      }
    }
  });

  it("each bar's label in the SVG reads as its table cell, long ones wrapped, never cut", () => {
    let wrapped = 0;
    for (const chart of charts) {
      const html = renderChart(chart);
      for (const m of html.matchAll(
        /<text x="0" y="[\d.]+" class="bench-label" data-row="(\d+)">(.*?)<\/text>/g,
      )) {
        const spans = [...(m[2] ?? "").matchAll(/<tspan[^>]*>([^<]*)<\/tspan>/g)].map((t) => t[1]);
        if (spans.length > 1) wrapped++;
        const label = chart.bars.find((b) => b.row === Number(m[1]))?.label ?? "";
        expect(textOf(spans.join("")), chart.table).toBe(label);
      }
    }
    expect(wrapped, "a label long enough to wrap (the MySQL fenced floor)").toBeGreaterThan(0);
  });

  it("a chart of a column the table lacks fails the build", () => {
    const table = tables.find((t) => t.suite === "file" && t.title.startsWith("Contended"));
    if (table === undefined) throw new Error("no file handoff table");
    const renamed = { ...table, columns: table.columns.map((c) => c.replace("waiter CPU", "CPU")) };
    expect(() => chartsOf(renamed)).toThrow(/no numeric column "waiter CPU per handoff \(µs\)"/);
    const noP99 = { ...table, columns: table.columns.map((c) => c.replace("gap p99", "p99")) };
    expect(() => gapChartsOf(noP99, GAP_CHARTS)).toThrow(/no column "gap p99 \(ms\)"/);
    const sweep = tableOf(lineCharts[0]?.table ?? "");
    const noWaiters = { ...sweep, columns: sweep.columns.map((c) => (c === "waiters" ? "n" : c)) };
    expect(() => lineChartsOf(noWaiters, LINE_CHARTS)).toThrow(/no column "waiters"/);
  });

  it("the page says faster or slower by the direction of the ratio", () => {
    const page = renderResults(results, "bench/results/latest.json");
    expect(page).not.toMatch(/\b0\.\d+x (slower|faster)\b/);
    expect(page).not.toMatch(/\b1\.0+x (slower|faster)\b/);
    // A row whose ratio the suite wrote below 1 reads as a ratio above 1, with its direction.
    expect(page).toMatch(/\| redis-semaphore Mutex \|[^\n]*\b[1-9]\d*\.\d+x (faster|slower)\b/);
  });
});

describe("gap distributions over bench/results/latest.json", () => {
  it("every handoff table has one, and each spec matches a table", () => {
    expect(gapCharts.map((c) => c.spec.suite).sort()).toEqual([
      "etcd",
      "file",
      "mysql",
      "postgres",
      "redis",
    ]);
    for (const spec of GAP_CHARTS) {
      expect(
        gapCharts.some((c) => c.spec === spec),
        `${spec.suite}: ${spec.table}`,
      ).toBe(true);
    }
  });

  it("each range is its row's p10, median, p90 and p99 cells, in that order", () => {
    for (const chart of gapCharts) {
      const table = tableOf(chart.table);
      expect(chart.ranges.map((r) => r.row)).toEqual(table.rows.map((_, i) => i));
      for (const range of chart.ranges) {
        const where = `${chart.table} / row ${range.row}`;
        for (const q of ["p10", "median", "p90", "p99"] as const) {
          expect(range[q], `${where} / ${q}`).toBe(cell(table, range.row, chart.spec[q]));
        }
        expect(range.label, where).toBe(cell(table, range.row, "library"));
        expect(range.p10, where).toBeLessThanOrEqual(range.median);
        expect(range.median, where).toBeLessThanOrEqual(range.p90);
        expect(range.p90, where).toBeLessThanOrEqual(range.p99);
      }
    }
  });

  it("the SVG draws each range at its cells' values, left to right, on a log axis when they span orders of magnitude", () => {
    for (const chart of gapCharts) {
      const html = renderGapChart(chart);
      expect(html).toMatch(/<svg class="bench-gaps" viewBox="0 0 640 \d+" width="100%"/);
      const groups = [
        ...html.matchAll(/<g class="bench-range [^"]*" data-row="(\d+)" ([^>]*)>(.*?)<\/g>/g),
      ];
      expect(groups.length).toBe(chart.ranges.length);
      for (const [, row, attributes, body] of groups) {
        const range = chart.ranges[Number(row)];
        if (range === undefined) throw new Error(`${chart.table}: no range ${row}`);
        for (const q of ["p10", "median", "p90", "p99"] as const) {
          expect(Number(new RegExp(`data-${q}="([^"]+)"`).exec(attributes ?? "")?.[1])).toBe(
            range[q],
          );
        }
        expect(body).toMatch(/<title>[^<]*p10 [^<]* p99 [^<]*<\/title>/);
        // Box from p10 to p90, median mark inside it, whisker ending at p99.
        const box = /<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*bench-range-box/.exec(
          body ?? "",
        );
        const median = /<rect x="([\d.]+)"[^>]*bench-range-median/.exec(body ?? "");
        const tail = [...(body ?? "").matchAll(/<line x1="([\d.]+)"[^>]*x2="([\d.]+)"/g)];
        const [x10, width, xMedian] = [box?.[1], box?.[2], median?.[1]].map(Number) as [
          number,
          number,
          number,
        ];
        expect(xMedian + 1.5).toBeGreaterThanOrEqual(x10 - 0.1);
        expect(xMedian + 1.5).toBeLessThanOrEqual(x10 + width + 0.1);
        expect(Number(tail[0]?.[2])).toBeGreaterThanOrEqual(x10 + width - 0.1);
      }
      const values = chart.ranges.flatMap((r) => [r.p10, r.p99]);
      const log = Math.max(...values) / Math.min(...values) > 20;
      expect(html.includes("(log scale)"), chart.table).toBe(log);
    }
    const redis = gapCharts.find((c) => c.spec.suite === "redis");
    expect(redis && renderGapChart(redis)).toContain("gap, ms (log scale)");
  });
});

describe("sweeps over waiters as lines", () => {
  it("each spec matches a table; Redis has our lines and the peers' with at least 3 waiter counts each", () => {
    for (const spec of LINE_CHARTS) {
      expect(
        lineCharts.some((c) => c.spec === spec),
        `${spec.suite}: ${spec.table} / ${spec.y}`,
      ).toBe(true);
    }
    for (const chart of lineCharts) {
      for (const line of chart.lines) {
        expect(
          new Set(line.points.map((p) => p.x)).size,
          `${chart.table}: ${line.label}`,
        ).toBeGreaterThanOrEqual(3);
      }
    }
    const redis = lineCharts.find((c) => c.spec.suite === "redis");
    const labels = redis?.lines.map((l) => l.label) ?? [];
    for (const name of ["@locks/redis", "raw SET NX PX", "redlock", "redis-semaphore"]) {
      expect(
        labels.some((l) => l.startsWith(name)),
        name,
      ).toBe(true);
    }
    const waiting = lineCharts.find((c) => c.spec.suite === "waiting");
    expect(waiting?.lines.map((l) => l.label)).toEqual([
      "redis",
      "redis fair",
      "etcd",
      "postgres",
      "mysql",
    ]);
  });

  it("each point is its row's waiters and plotted cell, on its row's line", () => {
    for (const chart of lineCharts) {
      const table = tableOf(chart.table);
      let points = 0;
      for (const line of chart.lines) {
        for (const point of line.points) {
          const where = `${chart.table} / row ${point.row}`;
          expect(point.x, where).toBe(cell(table, point.row, chart.spec.x));
          expect(point.y, where).toBe(cell(table, point.row, chart.spec.y));
          expect(line.label, where).toBe(cell(table, point.row, chart.spec.line));
          points++;
        }
      }
      const numeric = table.rows.filter(
        (r) => typeof r[table.columns.indexOf(chart.spec.y)] === "number",
      );
      expect(points).toBe(numeric.length);
      // The SVG's markers carry the same numbers.
      const html = renderLineChart(chart);
      expect(html).toMatch(/<svg class="bench-lines" viewBox="0 0 640 \d+" width="100%"/);
      const marks = [
        ...html.matchAll(/data-row="(\d+)" data-x="([^"]+)" data-y="([^"]+)"><title>/g),
      ];
      expect(marks.length).toBe(points);
      for (const [, row, x, y] of marks) {
        expect(Number(x)).toBe(cell(table, Number(row), chart.spec.x));
        expect(Number(y)).toBe(cell(table, Number(row), chart.spec.y));
      }
    }
  });

  it("a line rises on the chart as its cost grows (y axis upward, x to the right)", () => {
    for (const chart of lineCharts) {
      const html = renderLineChart(chart);
      const at = new Map(
        [...html.matchAll(/cx="([\d.]+)" cy="([\d.]+)"[^>]*data-row="(\d+)"/g)].map((m) => [
          Number(m[3]),
          { cx: Number(m[1]), cy: Number(m[2]) },
        ]),
      );
      const points = chart.lines.flatMap((l) => l.points);
      for (const a of points) {
        for (const b of points) {
          if (a.x < b.x) expect(at.get(a.row)!.cx).toBeLessThan(at.get(b.row)!.cx);
          if (a.y < b.y) expect(at.get(a.row)!.cy).toBeGreaterThanOrEqual(at.get(b.row)!.cy);
        }
      }
    }
  });
});

describe("wrapLines", () => {
  it("breaks at spaces within the room, and the lines joined are the text", () => {
    const text =
      "raw fencing upsert with GET_LOCK in its WHERE + DO RELEASE_LOCK(?), one connection";
    const lines = wrapLines(text, 30);
    expect(lines.join("")).toBe(text);
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(line.trimEnd().length).toBeLessThanOrEqual(30);
    expect(wrapLines("short", 30)).toEqual(["short"]);
  });
});

describe("directionText", () => {
  it.each([
    ["0.72x slower", "1.39x faster"],
    ["0.5x faster", "2.00x slower"],
    ["1.00x slower", "1.00x"],
    ["1.11x slower", "1.11x slower"],
    ["75.17x slower", "75.17x slower"],
    ["0.96x", "0.96x"],
    ["116.5x", "116.5x"],
    ["1.00x", "1.00x"],
  ])("%s reads %s", (cell, expected) => {
    expect(directionText(cell)).toBe(expected);
  });
});

/** The text a reader sees of escaped SVG text (the entities escapeXml writes). */
function textOf(escaped: string): string {
  const entities: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"' };
  return escaped.replace(/&(amp|lt|gt|quot|#\d+);/g, (_, name: string) =>
    name.startsWith("#") ? String.fromCharCode(Number(name.slice(1))) : (entities[name] ?? ""),
  );
}
