import {
  type BigIntStats,
  lstatSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import Module, { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { Script } from "node:vm";

/*
 * A V8 code cache for the bin's bundles: each run of `locks` would otherwise
 * parse and compile ~200 KB of JavaScript again (a tenth of a file lock's
 * start-up). Node 22 has this built in (module.enableCompileCache), used
 * where it exists; on Node 20 the bundles are compiled here, through
 * vm.Script with the cached data of an earlier run, as v8-compile-cache does.
 *
 * Cached code is executable: it lives in a directory of this user only (made
 * 0700, refused when another user owns it or others can write to it), and
 * each file carries the stat identity of the bundle it was made from (V8
 * itself checks only the source's length and its own version and flags).
 * Anything unexpected disables the cache for the run, never the command.
 */

/** `LOCKS_COMPILE_CACHE`: the cache directory, or `0` for none. */
const ENV = "LOCKS_COMPILE_CACHE";

interface ModuleInternals {
  _compile(content: string, filename: string): unknown;
}

/**
 * Compiles the `.cjs` files of `directory` (the bundles) with a code cache
 * kept in `$LOCKS_COMPILE_CACHE`, by default `<tmpdir>/locks-compile-cache-<uid>`.
 */
export function enableCompileCache(directory: string, env: NodeJS.ProcessEnv = process.env): void {
  const chosen = env[ENV];
  if (chosen === "0" || env.NODE_DISABLE_COMPILE_CACHE !== undefined) return;
  const uid = process.getuid?.();
  if (uid === undefined) return;
  const cacheDirectory = chosen || join(tmpdir(), `locks-compile-cache-${uid}`);
  const builtIn = (Module as { enableCompileCache?: (directory: string) => unknown })
    .enableCompileCache;
  if (builtIn !== undefined) {
    if (privateDirectory(cacheDirectory, uid)) builtIn(cacheDirectory);
    return;
  }
  const proto = Module.prototype as unknown as ModuleInternals;
  const compile = proto._compile;
  const toWrite: Array<{ script: Script; file: string; key: string }> = [];
  let usable: boolean | undefined;
  proto._compile = function (this: Module, content: string, filename: string): unknown {
    if (dirname(filename) !== directory || !filename.endsWith(".cjs")) {
      return compile.call(this, content, filename);
    }
    usable ??= privateDirectory(cacheDirectory, uid);
    if (!usable) return compile.call(this, content, filename);
    // Named after the bundle's path too: two installs of locks used in turn keep a cache each.
    const file = join(cacheDirectory, `${basename(filename)}-${pathHash(filename)}.v8`);
    const key = identity(statSync(filename, { bigint: true }));
    const cachedData = readCache(file, key);
    let script: Script;
    try {
      // Node's own wrapper; a shebang line stays a line (a comment), so positions in traces hold.
      script = new Script(
        `(function (exports, require, module, __filename, __dirname) { ${content.startsWith("#!") ? `//${content.slice(2)}` : content}\n});`,
        { filename, ...(cachedData === undefined ? {} : { cachedData }) },
      );
    } catch {
      // A syntax error: Node's own compile reports it as it would.
      return compile.call(this, content, filename);
    }
    if (cachedData === undefined || script.cachedDataRejected === true) {
      if (toWrite.length === 0) process.once("exit", () => writeCaches(toWrite));
      toWrite.push({ script, file, key });
    }
    const wrapper = script.runInThisContext() as (...args: unknown[]) => unknown;
    return wrapper.call(
      this.exports,
      this.exports,
      createRequire(filename),
      this,
      filename,
      dirname(filename),
    );
  };
}

/** Creates `directory` (0700) if needed; true when it is a directory of `uid` that no one else can write to. */
function privateDirectory(directory: string, uid: number): boolean {
  try {
    mkdirSync(directory, { recursive: true, mode: 0o700 });
    const stats = lstatSync(directory);
    return stats.isDirectory() && stats.uid === uid && (stats.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

/** FNV-1a of a path, in hex: a short name, not a secret. */
function pathHash(path: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) {
    hash = Math.imul(hash ^ path.charCodeAt(i), 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, "0");
}

/** What a cache file must name to be used for a bundle: the bundle's file as it is now, and this Node. */
function identity(stats: BigIntStats): string {
  return `${process.version} ${process.arch} ${stats.dev}:${stats.ino} ${stats.size} ${stats.mtimeNs} ${stats.ctimeNs}`;
}

/** The cached data in `file` when its first line is `key`; a cache file is `<key>\n<V8's data>`. */
function readCache(file: string, key: string): Buffer | undefined {
  let contents: Buffer;
  try {
    contents = readFileSync(file);
  } catch {
    return undefined;
  }
  const end = contents.indexOf(10);
  return end > 0 && contents.toString("latin1", 0, end) === key
    ? contents.subarray(end + 1)
    : undefined;
}

/** At exit, after the run compiled what it needed: each missing or stale cache, written whole (temp file, rename). */
function writeCaches(toWrite: ReadonlyArray<{ script: Script; file: string; key: string }>): void {
  for (const { script, file, key } of toWrite) {
    try {
      const temp = `${file}.${process.pid}`;
      writeFileSync(
        temp,
        Buffer.concat([Buffer.from(`${key}\n`, "latin1"), script.createCachedData()]),
        {
          mode: 0o600,
        },
      );
      renameSync(temp, file);
    } catch {
      // A full disk or a removed directory: the next run compiles again.
    }
  }
}
