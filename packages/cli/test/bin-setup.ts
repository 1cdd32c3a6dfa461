import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** From test/bin-setup.ts: the `locks` bin (dist/cli.cjs's bundles), built from src/ for this run. */
    locksBin: string;
  }
}

const PACKAGE = fileURLToPath(new URL("..", import.meta.url));

/**
 * vitest globalSetup: builds the bin once per run with build.mjs, from the
 * TypeScript sources, into node_modules/.cache (where the bundles resolve
 * @locks/* and the drivers as dist/ does). The tests run what users run, and
 * each `locks` they start takes a fifth of the CPU of compiling src/ with tsx.
 */
export default async function setup(
  project: Pick<TestProject, "provide">,
): Promise<() => Promise<void>> {
  const cache = join(PACKAGE, "node_modules", ".cache");
  await mkdir(cache, { recursive: true });
  const root = await mkdtemp(join(cache, "bin-"));
  await promisify(execFile)(process.execPath, [join(PACKAGE, "build.mjs"), join(root, "dist")], {
    cwd: PACKAGE,
  });
  project.provide("locksBin", join(root, "dist", "cli.cjs"));
  return () => rm(root, { recursive: true, force: true });
}
