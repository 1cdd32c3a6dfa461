import { mkdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { generateApi } from "./api.js";
import { defaultResultsPath, readResults, renderResults } from "./benchmarks.js";
import { readManifests, renderManifests } from "./capabilities.js";
import { renderCliHelp } from "./cli-help.js";
import { docsRoot } from "./samples.js";
import { defaultChaosResults, readChaosResults, renderReliability } from "./timeline.js";

/*
 * Everything on the site that comes from the code rather than from a writer:
 * the support table (from the backends' manifests), the benchmark tables
 * (from bench/results/latest.json), the CLI's help texts (from the command)
 * and the API reference (TypeDoc). Run before
 * every `vitepress build` and `vitepress dev`; the outputs are git-ignored.
 */

const generated = join(docsRoot, ".vitepress", "generated");
mkdirSync(generated, { recursive: true });
const started = performance.now();

const manifests = await readManifests();
writeFileSync(join(generated, "capabilities.md"), renderManifests(manifests));
// One table per backend page, with the rows of that backend's configurations.
for (const page of new Set(manifests.map((m) => m.page))) {
  const rows = manifests.filter((m) => m.page === page);
  writeFileSync(join(generated, `capabilities-${page}.md`), renderManifests(rows));
}

const resultsPath = process.env.LOCKS_BENCH_RESULTS ?? defaultResultsPath;
const results = readResults(resultsPath);
const source = relative(join(docsRoot, ".."), resultsPath).split("\\").join("/");
writeFileSync(join(generated, "benchmarks.md"), renderResults(results, source));

// The reliability page's results: summary table and timelines, from the chaos suite's results.
const chaosDir = process.env.LOCKS_CHAOS_RESULTS ?? defaultChaosResults;
const chaos = readChaosResults(chaosDir);
const chaosSource = relative(join(docsRoot, ".."), chaosDir).split("\\").join("/");
const reliability = renderReliability(chaos, chaosSource);
writeFileSync(join(generated, "reliability-summary.md"), reliability.summary);
writeFileSync(join(generated, "reliability-scenarios.md"), reliability.scenarios);

const cli = renderCliHelp();
writeFileSync(join(generated, "cli-help.md"), cli.markdown);

const api = await generateApi();

const read = manifests.filter((m) => "capabilities" in m).length;
console.log(
  `docs: support table from ${read}/${manifests.length} manifests; ` +
    `benchmarks ${results === undefined ? "missing (page says how to run them)" : `from ${source}`}; ` +
    `chaos timelines for ${chaos.length} scenarios; ` +
    `CLI help ${cli.present ? "captured" : "missing (not landed)"}; ` +
    `API reference for ${api.documented.join(", ")}` +
    (api.missing.length > 0 ? ` (not landed yet: ${api.missing.join(", ")})` : "") +
    ` [${((performance.now() - started) / 1000).toFixed(1)} s]`,
);
