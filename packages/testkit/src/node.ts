import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

function tsxLoader(): string {
  try {
    // Absolute, so the child can run from any working directory.
    return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  } catch {
    return "tsx";
  }
}

/**
 * `execArgv` that runs a TypeScript file from source in a child process,
 * resolving workspace packages to their `src/` through the "@locks/source"
 * condition: `fork(file, args, { execArgv: nodeChildArgs })` or
 * `spawn(process.execPath, [...nodeChildArgs, file])`.
 */
export const nodeChildArgs: string[] = ["--import", tsxLoader(), "--conditions=@locks/source"];
