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
  mkdir(path: string, mode: number): Promise<void>;
  /** `mkdir -p`; resolves when the directory exists. */
  mkdirp(path: string, mode: number): Promise<void>;
  rmdir(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  readlink(path: string): Promise<string>;
  stat(path: string): Promise<fs.Stats>;
  lstat(path: string): Promise<fs.Stats>;
  /** `lstat`, or undefined when nothing is there (cheaper than catching ENOENT). */
  lstatIfAny(path: string): Promise<fs.Stats | undefined>;
  readdir(path: string): Promise<string[]>;
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
  mkdir: async (path, mode) => {
    await p.mkdir(path, { mode });
  },
  mkdirp: async (path, mode) => {
    await p.mkdir(path, { mode, recursive: true });
  },
  rmdir: (path) => p.rmdir(path),
  rename: (from, to) => p.rename(from, to),
  unlink: (path) => p.unlink(path),
  symlink: (target, path) => p.symlink(target, path),
  readlink: (path) => p.readlink(path, "utf8"),
  stat: (path) => p.stat(path),
  lstat: (path) => p.lstat(path),
  lstatIfAny: (path) => unless(p.lstat(path), ["ENOENT"], undefined),
  readdir: (path) => p.readdir(path),
  utimes: (path, time) => p.utimes(path, time, time),
  readFile: (path) => p.readFile(path, "utf8"),
  writeDurable: async (path, temp, content) => {
    const handle = await p.open(temp, "w", 0o600);
    try {
      await handle.writeFile(content, "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    await p.rename(temp, path);
    const dir = await p.open(dirname(path), "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  },
};

const DONE: Promise<void> = Promise.resolve();

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

function settledVoid<A extends unknown[]>(
  fn: (...args: A) => unknown,
): (...args: A) => Promise<void> {
  return (...args) => {
    try {
      fn(...args);
      return DONE;
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Synchronous file-system calls; also used where the caller must not yield (exit handlers). */
export const syncCalls = {
  rmdir: fs.rmdirSync,
  rename: fs.renameSync,
  unlink: fs.unlinkSync,
  utimes: (path: string, time: Date): void => fs.utimesSync(path, time, time),
};

export const syncIo: Io = {
  mkdir: settledVoid((path: string, mode: number) => fs.mkdirSync(path, { mode })),
  mkdirp: settledVoid((path: string, mode: number) =>
    fs.mkdirSync(path, { mode, recursive: true }),
  ),
  rmdir: settledVoid(fs.rmdirSync),
  rename: settledVoid(fs.renameSync),
  unlink: settledVoid(fs.unlinkSync),
  symlink: settledVoid((target: string, path: string) => fs.symlinkSync(target, path)),
  readlink: settled((path: string) => fs.readlinkSync(path, "utf8")),
  stat: settled((path: string) => fs.statSync(path)),
  lstat: settled((path: string) => fs.lstatSync(path)),
  lstatIfAny: settled((path: string) => fs.lstatSync(path, { throwIfNoEntry: false })),
  readdir: settled((path: string) => fs.readdirSync(path)),
  utimes: settledVoid(syncCalls.utimes),
  readFile: settled((path: string) => fs.readFileSync(path, "utf8")),
  writeDurable: settledVoid((path: string, temp: string, content: string) => {
    const fd = fs.openSync(temp, "w", 0o600);
    try {
      fs.writeFileSync(fd, content, "utf8");
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, path);
    const dir = fs.openSync(dirname(path), "r");
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }),
};
