import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, relative } from "node:path";
import { collectSamples, docsRoot, type Sample, sampleSource, samplesDir } from "./samples.js";

/*
 * Type-checks every TypeScript sample of the docs against the real packages:
 * each ```ts block becomes a .ts file in a scratch directory inside docs/
 * (so @locks/* resolve through docs' node_modules), compiled by tsc with the
 * repository's tsconfig.base.json, whose "@locks/source" condition points
 * the imports at the packages' sources. Errors are reported against the page
 * and line they come from.
 *
 *   pnpm --filter @locks/docs typecheck
 */

const samples = collectSamples();
const checked = samples.filter((s) => s.check);
const skipped = samples.filter((s) => !s.check);

// A directory of this run's own: two checks at once (two editors of the docs) must not
// delete each other's files.
mkdirSync(samplesDir, { recursive: true });
const dir = mkdtempSync(join(samplesDir, "check-"));
for (const sample of checked) writeFileSync(join(dir, sample.fileName), sampleSource(sample));
const base = relative(dir, join(docsRoot, "..", "tsconfig.base.json"))
  .split("\\")
  .join("/");
writeFileSync(
  join(dir, "tsconfig.json"),
  `${JSON.stringify(
    {
      extends: base,
      compilerOptions: {
        noEmit: true,
        declaration: false,
        declarationMap: false,
        sourceMap: false,
      },
      files: checked.map((s) => s.fileName),
    },
    null,
    2,
  )}\n`,
);

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const started = performance.now();
const result = spawnSync(
  process.execPath,
  [tsc, "-p", join(dir, "tsconfig.json"), "--pretty", "false"],
  {
    cwd: dir,
    encoding: "utf8",
  },
);
const seconds = ((performance.now() - started) / 1000).toFixed(1);

const byFile = new Map<string, Sample>(checked.map((s) => [s.fileName, s]));
const report = `${result.stdout}${result.stderr}`
  .split("\n")
  .filter((line) => line.trim().length > 0)
  .map((line) => {
    // "guide-getting-started-1.ts(3,5): error TS2304: ..." -> "guide/getting-started.md:14:5: error TS2304: ..."
    const m = /^([\w.-]+\.ts)\((\d+),(\d+)\): (.*)$/.exec(line);
    const sample = m === null ? undefined : byFile.get(m[1]!);
    if (m === null || sample === undefined) return line;
    return `docs/${sample.page}:${sample.line + Number(m[2]) - 1}:${m[3]}: ${m[4]}`;
  });

if (result.status !== 0) {
  console.error(report.join("\n"));
  console.error(
    `\n${checked.length} samples type-checked in ${seconds} s: FAILED (files in ${dir})`,
  );
  process.exit(1);
}
if (process.argv.includes("--keep")) console.log(`samples kept in ${dir}`);
else rmSync(dir, { recursive: true, force: true });
const pages = new Set(checked.map((s) => s.page)).size;
console.log(
  `${checked.length} samples from ${pages} pages type-check against the packages (${seconds} s); ` +
    `${skipped.length} marked no-check: ${skipped.map((s) => `${s.page}:${s.line}`).join(", ") || "none"}`,
);
