import type { BenchTable } from "../../bench/src/table.js";

/*
 * How a chart of the benchmark page names the rows of its table: by library
 * (or case, or backend), joined by the other text cells that tell rows with
 * one name apart (the file suite runs every library on two file systems).
 */

/** Whether every row's cell in `column` is a number (a column a chart can plot). */
export function isNumeric(table: BenchTable, column: number): boolean {
  return table.rows.length > 0 && table.rows.every((row) => typeof row[column] === "number");
}

/** The columns a row is named by, among `names` (first found), with the group columns it needs. */
export interface Labelling {
  /** The column that names a row. */
  readonly label: number;
  /** Other text columns that must join the name when the name alone repeats. */
  readonly groups: number[];
}

/**
 * Which column names a row (the first of `names` the table has, else its
 * first text column), and which other text columns left of the numbers must
 * join it so that every row reads differently. A table whose rows no text
 * column tells apart fails the build.
 */
export function labelling(
  table: BenchTable,
  names: readonly string[] = ["library", "case"],
): Labelling {
  const text = table.columns.map((_, i) => i).filter((i) => !isNumeric(table, i));
  const named = names.map((n) => table.columns.indexOf(n)).find((i) => i >= 0);
  const label = named ?? text[0];
  if (label === undefined)
    throw new Error(`benchmarks: "${table.title}" has no text column to label bars`);
  const key = (row: ReadonlyArray<string | number>, groups: number[]): string =>
    JSON.stringify([row[label], ...groups.map((g) => row[g])]);
  const distinct = (groups: number[]): boolean =>
    new Set(table.rows.map((row) => key(row, groups))).size === table.rows.length;
  if (distinct([])) return { label, groups: [] };
  const firstNumeric = table.columns.findIndex((_, i) => isNumeric(table, i));
  const candidates = text.filter((i) => i !== label && (firstNumeric < 0 || i < firstNumeric));
  if (distinct(candidates)) return { label, groups: candidates };
  throw new Error(`benchmarks: "${table.title}" has rows no text column tells apart`);
}

/** A column's index by its exact header; a header the table lacks fails the build. */
export function columnOf(table: BenchTable, header: string, what: string): number {
  const index = table.columns.indexOf(header);
  if (index < 0) {
    throw new Error(
      `benchmarks ${what} "${table.title}": the table has no column "${header}" ` +
        `(columns: ${table.columns.join(", ")}); update docs/scripts/benchmarks.ts`,
    );
  }
  return index;
}
