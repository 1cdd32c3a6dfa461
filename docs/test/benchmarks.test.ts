import { describe, expect, it } from "vitest";
import type { BenchTable } from "../../bench/src/table.js";
import {
  CHARTS,
  type Chart,
  chartsOf,
  directionText,
  readResults,
  renderChart,
  renderResults,
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

describe("benchmark charts over bench/results/latest.json", () => {
  it("the results file is there, with a chart for every suite", () => {
    expect(results).toBeDefined();
    const suites = new Set(charts.map((c) => c.spec.suite));
    expect([...suites].sort()).toEqual(["etcd", "file", "postgres", "redis", "thread"]);
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
      expect(named).toEqual(chart.spec.columns.map(escapeHtml));
      const width = Number(/viewBox="0 0 (\d+) /.exec(html)?.[1]);
      for (const m of html.matchAll(/<text x="(\d+)"[^>]*class="bench-value"[^>]*>([^<]*)</g)) {
        // 7.2 px per character is wider than the theme's 12 px digits and letters.
        expect(Number(m[1]) + (m[2]?.length ?? 0) * 7.2, m[2]).toBeLessThanOrEqual(width);
      }
    }
  });

  it("a chart of a column the table lacks fails the build", () => {
    const table = tables.find((t) => t.suite === "file" && t.title.startsWith("Contended"));
    if (table === undefined) throw new Error("no file handoff table");
    const renamed = { ...table, columns: table.columns.map((c) => c.replace("gap p99", "p99")) };
    expect(() => chartsOf(renamed)).toThrow(/no numeric column "gap p99 \(ms\)"/);
  });

  it("the page says faster or slower by the direction of the ratio", () => {
    const page = renderResults(results, "bench/results/latest.json");
    expect(page).not.toMatch(/\b0\.\d+x (slower|faster)\b/);
    expect(page).not.toMatch(/\b1\.0+x (slower|faster)\b/);
    // A row whose ratio the suite wrote below 1 reads as a ratio above 1, with its direction.
    expect(page).toMatch(/\| redis-semaphore Mutex \|[^\n]*\b[1-9]\d*\.\d+x (faster|slower)\b/);
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

function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
