import { readFileSync } from "node:fs";
import { configDefaults } from "vitest/config";
import { defineProject } from "../vitest.shared.js";

/*
 * The vitest config Stryker runs a package's tests with (see stryker.config.mjs).
 * Its root is the working directory: the sandbox copy of the package.
 */

/**
 * Tests left out of mutation runs, by package, and why:
 * - a test that starts another vitest (core's broken-backends) tests the
 *   unmutated sources, slowly;
 * - core's conformance run against the memory backend takes 5 s per mutant:
 *   core's own tests must kill its mutants without it (a conservative score);
 * - thread's worker tests run the backend in worker_threads, where no mutant
 *   is ever active, for 7 s.
 */
const leftOut: Record<string, string[]> = {
  "@locks/core": ["test/broken-backends.test.ts", "test/memory.conformance.test.ts"],
  "@locks/thread": ["test/workers.test.ts"],
};

const { name } = JSON.parse(readFileSync("package.json", "utf8")) as { name: string };

export default defineProject({
  exclude: [...configDefaults.exclude, ...(leftOut[name] ?? [])],
  // Instrumented code on a shared machine is slow: one retry keeps a timing
  // test that failed by chance from failing the dry run or killing a mutant.
  retry: 1,
  // A mutant that makes a wait hang fails its test here, cheaply, before Stryker's
  // own timeout would restart the test runner (the slowest test takes about 1 s).
  testTimeout: 4_000,
});
