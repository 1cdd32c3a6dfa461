/*
 * `pnpm mutate [package] [stryker options]`: mutation testing (Stryker) of
 * one workspace package, @locks/core by default. `package` is a package name
 * (@locks/thread) or its directory under packages/ (thread); options go to
 * `stryker run` as given (e.g. --force to re-test every mutant, --concurrency 1).
 * Reports: reports/mutation/<dir>.html and .json.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StrykerCli } from "@stryker-mutator/core";

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);

const args = process.argv.slice(2);
const requested = args[0] !== undefined && !args[0].startsWith("-") ? args.shift() : "@locks/core";
const dir = join(root, "packages", requested.replace(/^@locks\//, ""));
const manifest = join(dir, "package.json");
if (!existsSync(manifest)) {
  console.error(`pnpm mutate: no package ${requested} under packages/`);
  process.exit(2);
}
console.log(`mutation testing ${JSON.parse(readFileSync(manifest, "utf8")).name}`);

// Stryker copies its working directory into the sandbox: that must be the package.
process.chdir(dir);
new StrykerCli([
  process.execPath,
  "stryker",
  "run",
  join(here, "stryker.config.mjs"),
  ...args,
]).run();
