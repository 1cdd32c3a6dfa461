import { resolve } from "node:path";
import { invalidArgument } from "@locks/core";

/** Options of {@link fileBackend}. */
export interface FileBackendOptions {
  /**
   * Directory holding the lock files, one set of files per key. Created on
   * first use (with `directoryMode`) when it does not exist. Every process
   * that must contend for the same keys uses the same directory; it should be
   * on a local file system (see the README about network file systems).
   */
  directory: string;
  /** Permission bits of the lock directory when the backend creates it. Default `0o700` (owner only). */
  directoryMode?: number;
  /**
   * How the lock's file-system calls are made. `"sync"` (default): directly,
   * about ten calls per acquire + release, each microseconds on a local disk
   * (less than a thread-pool round trip each: see the README's benchmark);
   * the event loop waits for them. `"async"`: through the libuv thread pool,
   * for a slow or network file system where one call can block for long.
   */
  io?: "sync" | "async";
}

export interface ResolvedFileOptions {
  readonly directory: string;
  readonly directoryMode: number;
  readonly io: "sync" | "async";
}

const KNOWN = new Set(["directory", "directoryMode", "io"]);

/** Validates the factory's options before any I/O. */
export function resolveFileOptions(options: FileBackendOptions): ResolvedFileOptions {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", "must be an object with a `directory`");
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN.has(name)) throw invalidArgument(`options.${name}`, "is not a known option");
  }
  const { directory, directoryMode = 0o700, io = "sync" } = options;
  if (typeof directory !== "string" || directory.length === 0) {
    throw invalidArgument("directory", "must be a non-empty string (a path)");
  }
  if (directory.includes("\u0000")) throw invalidArgument("directory", "must not contain NUL");
  if (!Number.isInteger(directoryMode) || directoryMode < 0 || directoryMode > 0o7777) {
    throw invalidArgument("directoryMode", "must be an integer between 0 and 0o7777");
  }
  if (io !== "sync" && io !== "async") {
    throw invalidArgument("io", `must be "sync" or "async"`);
  }
  return { directory: resolve(directory), directoryMode, io };
}
