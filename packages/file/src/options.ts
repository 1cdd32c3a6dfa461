import { resolve } from "node:path";
import { type Check, check, defineOptions, invalidArgument } from "@locks/core/backend";

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

export type ResolvedFileOptions = Readonly<Required<FileBackendOptions>>;

const path: Check<string> = (value, name) => {
  const text = check.string(value, name);
  if (text.includes("\u0000")) throw invalidArgument(name, "must not contain NUL");
  return text;
};

const ioMode: Check<"sync" | "async"> = (value, name) => {
  if (value !== "sync" && value !== "async")
    throw invalidArgument(name, `must be "sync" or "async"`);
  return value;
};

const parse = defineOptions({
  directory: path,
  directoryMode: check.integer(0, 0o7777),
  io: ioMode,
});

/** Validates the factory's options before any I/O. */
export function resolveFileOptions(options: FileBackendOptions): ResolvedFileOptions {
  const { directory, directoryMode = 0o700, io = "sync" } = parse(options);
  if (directory === undefined) throw invalidArgument("options.directory", "is required (a path)");
  return { directory: resolve(directory), directoryMode, io };
}
