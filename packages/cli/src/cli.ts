#!/usr/bin/env node
/**
 * The `locks` executable. Everything is in `main`; this file hands it the
 * arguments and exits with its code. No top-level await: the published bin
 * is this file bundled as CommonJS (see build.mjs), which starts faster than
 * an ES module.
 */
import { enableCompileCache } from "./compile-cache.js";

// Node opens its inspector (a debugger anyone on this host can attach to) when a process it runs gets
// SIGUSR1 and no listener is installed. This one is installed before anything else loads and stays
// for the life of the process: removing the last listener would not bring the inspector back but make
// SIGUSR1 fatal. While `locks run` runs a command, SignalRouter passes SIGUSR1 on to it.
try {
  process.on("SIGUSR1", () => {});
} catch {
  // A platform without SIGUSR1 (Windows) has no such inspector trigger either.
}

const argv = process.argv.slice(2);
// Before the other bundles load: they are the `.cjs` files next to the bin (nothing in src/). Only
// for the commands that load a backend: a cache made by `--help` would lack what `run` compiles.
if (argv[0] === "run" || argv[0] === "status" || argv[0] === "release") {
  enableCompileCache(import.meta.dirname);
}

void import("./main.js")
  .then(({ main }) => main(argv))
  .then((code) => {
    process.exitCode = code;
    // The lock is released, its client closed (or given up on) and our output flushed by now:
    // exit rather than wait for timers a client library may leave behind (ioredis keeps a 2 s
    // disconnect timer for a socket that never connected).
    process.exit(code);
  });
