#!/usr/bin/env node
/**
 * The `locks` executable. Everything is in `main`; this file hands it the
 * arguments and exits with its code.
 */
import { main } from "./main.js";

const code = await main(process.argv.slice(2));
process.exitCode = code;
// The lock is released and its client closed (or given up on) by now. Flush our own output,
// then exit rather than wait for timers a client library may leave behind (ioredis keeps a
// 2 s disconnect timer for a socket that never connected).
await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
process.exit(code);

function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) resolve();
    else stream.write("", () => resolve());
  });
}
