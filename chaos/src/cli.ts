/**
 * `pnpm test:chaos [--duration <seconds>] [--seed <n>] [--only <scenario,...>] [--out <dir>]`:
 * runs every scenario, prints the table, writes one JSON summary per scenario,
 * and exits 1 when a check failed (printing seed, schedule and offending holds).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { failureReport, runScenario } from "./run.js";
import { scenarios } from "./scenarios.js";
import { type ScenarioSummary, summaryTable } from "./summary.js";
import { formatResults } from "./timeline.js";

const { values } = parseArgs({
  options: {
    duration: { type: "string", default: "100" },
    seed: { type: "string" },
    only: { type: "string" },
    out: { type: "string", default: new URL("../results", import.meta.url).pathname },
  },
});

const total = Number(values.duration) * 1000;
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
if (!Number.isFinite(total) || total <= 0 || !Number.isInteger(seed)) {
  console.error(
    "usage: pnpm test:chaos [--duration <seconds>] [--seed <integer>] [--only file,redis-aof,...]",
  );
  process.exit(2);
}
const only = values.only?.split(",");
const chosen = scenarios.filter((s) => only === undefined || only.includes(s.name));
const weights = chosen.reduce((sum, s) => sum + s.weight, 0);
console.log(`chaos: seed ${seed}, ${total / 1000} s of faults over ${chosen.length} scenario(s)`);

const summaries: ScenarioSummary[] = [];
const started = performance.now();
await mkdir(values.out, { recursive: true });
for (const [i, def] of chosen.entries()) {
  const summary = await runScenario(def, {
    seed: seed + i,
    durationMs: Math.round((total * def.weight) / weights),
    log: (line) => console.log(line),
  });
  summaries.push(summary);
  await writeFile(join(values.out, `${def.name}.json`), formatResults(summary));
  if (!summary.passed) console.error(failureReport(summary));
}
console.log(`\n${summaryTable(summaries)}\n`);
console.log(`chaos: ${((performance.now() - started) / 1000).toFixed(1)} s, seed ${seed}`);
process.exit(summaries.every((s) => s.passed) ? 0 : 1);
