import * as fs from "node:fs";
import { dirname } from "node:path";

/**
 * The file-system calls the lock protocol makes, as promises. Two
 * implementations share one protocol: `asyncIo` (libuv thread pool) and
 * `syncIo` (the same calls made synchronously, returned as settled promises).
 * Lock files are tiny metadata operations; on a local disk a synchronous call
 * costs less than the thread-pool round trip it saves.
 */
export interface Io {
  /** `recursive`: `mkdir -p`, which resolves when the directory exists. */
  mkdir(path: string, mode: number, recursive?: boolean): Promise<void>;
  rmdir(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  readlink(path: string): Promise<string>;
  lstat(path: string): Promise<fs.Stats>;
  /** `lstat`, or undefined when nothing is there (cheaper than catching ENOENT). */
  lstatIfAny(path: string): Promise<fs.Stats | undefined>;
  readdir(path: string): Promise<string[]>;
  /** Sets the mtime (and atime) of `path` itself: a symlink's own, never its target's. */
  utimes(path: string, time: Date): Promise<void>;
  readFile(path: string): Promise<string>;
  /** Writes `content` to `temp`, fsyncs it, renames it to `path`, then fsyncs `path`'s directory. */
  writeDurable(path: string, temp: string, content: string): Promise<void>;
}

/** The `code` of a Node.js system error, if any. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** An error with a `code`, as Node's system errors have: the protocol's own reasons and refusals. */
export function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** Runs `op`, turning the listed error codes into `fallback`. */
export async function unless<T, F>(
  op: Promise<T>,
  codes: readonly string[],
  fallback: F,
): Promise<T | F> {
  try {
    return await op;
  } catch (error) {
    const code = errorCode(error);
    if (code !== undefined && codes.includes(code)) return fallback;
    throw error;
  }
}

const p = fs.promises;

export const asyncIo: Io = {
  mkdir: async (path, mode, recursive) => {
    await p.mkdir(path, { mode, recursive });
  },
  rmdir: (path) => p.rmdir(path),
  rename: (from, to) => p.rename(from, to),
  unlink: (path) => p.unlink(path),
  symlink: (target, path) => p.symlink(target, path),
  readlink: (path) => p.readlink(path, "utf8"),
  lstat: (path) => p.lstat(path),
  lstatIfAny: (path) => unless(p.lstat(path), ["ENOENT"], undefined),
  readdir: (path) => p.readdir(path),
  utimes: (path, time) => p.lutimes(path, time, time),
  readFile: (path) => p.readFile(path, "utf8"),
  writeDurable: async (path, temp, content) => {
    // flush: fsync before the file is closed.
    await p.writeFile(temp, content, { mode: 0o600, flush: true });
    await p.rename(temp, path);
    const dir = await p.open(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  },
};

/** Wraps a synchronous call: its result or its error, as a settled promise. */
function settled<A extends unknown[], T>(fn: (...args: A) => T): (...args: A) => Promise<T> {
  return (...args) => {
    try {
      return Promise.resolve(fn(...args));
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

export const syncIo: Io = {
  mkdir: settled(
    (path: string, mode: number, recursive?: boolean) =>
      void fs.mkdirSync(path, { mode, recursive }),
  ),
  rmdir: settled(fs.rmdirSync),
  rename: settled(fs.renameSync),
  unlink: settled(fs.unlinkSync),
  symlink: settled((target: string, path: string) => fs.symlinkSync(target, path)),
  readlink: settled((path: string) => fs.readlinkSync(path, "utf8")),
  lstat: settled((path: string) => fs.lstatSync(path)),
  lstatIfAny: settled((path: string) => fs.lstatSync(path, { throwIfNoEntry: false })),
  readdir: settled((path: string) => fs.readdirSync(path)),
  utimes: settled((path: string, time: Date) => fs.lutimesSync(path, time, time)),
  readFile: settled((path: string) => fs.readFileSync(path, "utf8")),
  writeDurable: settled((path: string, temp: string, content: string) => {
    fs.writeFileSync(temp, content, { mode: 0o600, flush: true });
    fs.renameSync(temp, path);
    const dir = fs.openSync(dirname(path), "r");
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }),
};
