/** One benchmark's result: printed as a markdown table and saved as JSON for the docs. */
export interface BenchTable {
  /** Which suite made it: "thread", "file", ... (also the key in results JSON). */
  readonly suite: string;
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: ReadonlyArray<ReadonlyArray<string | number>>;
  /** Goals and how they were met, free text. */
  readonly notes?: readonly string[];
}

/** A benchmark module: `src/<suite>.ts` default-exports one of these. */
export type BenchSuite = () => Promise<BenchTable[]>;

export function formatTable(table: BenchTable): string {
  const cells = table.rows.map((row) =>
    row.map((c) => (typeof c === "number" ? formatNumber(c) : c)),
  );
  const header = `| ${table.columns.join(" | ")} |`;
  const rule = `|${table.columns.map(() => "---").join("|")}|`;
  const body = cells.map((row) => `| ${row.join(" | ")} |`);
  const notes = (table.notes ?? []).map((n) => `- ${n}`);
  return [`### ${table.title}`, "", header, rule, ...body, "", ...notes].join("\n");
}

/** A cell as printed: counts as they are ("10", "1,000"), other values to about 3 significant digits. */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toPrecision(3);
}

/** Runs `fn` repeatedly for about `ms` and returns operations per second. */
export async function opsPerSecond(
  fn: () => Promise<unknown>,
  ms: number,
  batch = 1000,
): Promise<number> {
  for (let i = 0; i < Math.min(batch, 200); i++) await fn(); // warm up
  let ops = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    for (let i = 0; i < batch; i++) await fn();
    ops += batch;
  }
  return (ops * 1000) / (performance.now() - start);
}
