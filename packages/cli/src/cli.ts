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

// Before the other bundles load: they are the `.cjs` files next to the bin (nothing in src/).
enableCompileCache(import.meta.dirname);

void import("./main.js")
  .then(({ main }) => main(process.argv.slice(2)))
  .then(async (code) => {
    process.exitCode = code;
    // The lock is released and its client closed (or given up on) by now. Flush our own output,
    // then exit rather than wait for timers a client library may leave behind (ioredis keeps a
    // 2 s disconnect timer for a socket that never connected).
    await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    process.exit(code);
  });

function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) resolve();
    else stream.write("", () => resolve());
  });
}
