import { mkdir, writeFile } from "node:fs/promises";
import type { BenchSuite, BenchTable } from "./table.js";
import { formatTable } from "./table.js";

/*
 * `pnpm bench [suite...]` runs the named suites (default: all) one after the
 * other, so no two compete for the 2 cores, prints their tables and writes
 * results/latest.json, which the docs' benchmark page renders.
 */
const ALL = [
  "thread",
  "file",
  "redis",
  "etcd",
  "postgres",
  "mysql",
  "failover",
  "cli-startup",
  "waiting",
];
const wanted = process.argv.slice(2).filter((a) => !a.startsWith("-"));
const suites = wanted.length > 0 ? wanted : ALL;

const results: Record<string, BenchTable[]> = {};
for (const name of suites) {
  if (!ALL.includes(name)) throw new Error(`unknown suite ${name}; known: ${ALL.join(", ")}`);
  const mod = (await import(`./${name}.js`)) as { default: BenchSuite };
  const tables = await mod.default();
  results[name] = tables;
  for (const table of tables) console.log(`${formatTable(table)}\n`);
}

const out = new URL("../results/latest.json", import.meta.url);
await mkdir(new URL(".", out), { recursive: true });
const previous = await import(out.href, { with: { type: "json" } }).then(
  (m: { default: { suites: Record<string, BenchTable[]> } }) => m.default.suites,
  () => ({}),
);
await writeFile(
  out,
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, suites: { ...previous, ...results } }, null, 2)}\n`,
);
console.log(`results written to ${out.pathname}`);
