import { accessSync, constants, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

export { sleep };

/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this many milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Pause between two checks (default 25 ms). */
  intervalMs?: number;
  /** What was awaited, for the error message. */
  message?: string;
}

/**
 * Polls `check` until it returns a truthy value and resolves with it.
 * A check that throws counts as "not yet"; after the deadline the last
 * error is the `cause` of the thrown timeout error.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 25;
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    const left = deadline - performance.now();
    if (left <= 0) break;
    await sleep(Math.min(intervalMs, left));
  }
  const what = options.message ?? "condition";
  const detail =
    lastError instanceof Error
      ? `; last error: ${lastError.message}`
      : lastError !== undefined
        ? `; last error: ${String(lastError)}`
        : "";
  throw new Error(`waitFor timed out after ${timeoutMs} ms waiting for ${what}${detail}`, {
    cause: lastError,
  });
}

const handedOut = new Set<number>();

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it,
 * close). Ports handed out by this process are not handed out twice. Another
 * process may still take it first: starters retry on EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.unref();
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
        const address = server.address();
        const port = typeof address === "object" && address ? address.port : 0;
        server.close(() => resolve(port));
      });
    });
    if (port > 0 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("freePort: could not find a free port on 127.0.0.1");
}

/** Thrown when a server binary is missing; names the Debian package. */
export class MissingBinaryError extends Error {
  override readonly name = "MissingBinaryError";
  constructor(
    readonly binary: string,
    readonly debianPackage: string,
    envOverride?: string,
  ) {
    super(
      `${binary} was not found. Install the Debian package "${debianPackage}" ` +
        `(apt-get install -y --no-install-recommends ${debianPackage}, or run .ci/install-servers)` +
        (envOverride ? `, or set ${envOverride} to use a running server` : "") +
        ".",
    );
  }
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Absolute path of `binary` on PATH, or undefined. */
export function which(binary: string, path = process.env.PATH ?? ""): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** Like {@link which}, but throws a {@link MissingBinaryError}. */
export function requireBinary(binary: string, debianPackage: string, envOverride?: string): string {
  const path = which(binary);
  if (!path) throw new MissingBinaryError(binary, debianPackage, envOverride);
  return path;
}

/**
 * The directory holding PostgreSQL's server binaries (initdb, postgres):
 * $LOCKS_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else PATH.
 */
export function postgresBinDir(): string {
  const fromEnv = process.env.LOCKS_PG_BIN;
  if (fromEnv && isExecutable(join(fromEnv, "postgres"))) return fromEnv;
  try {
    const versions = readdirSync("/usr/lib/postgresql")
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const dir = join("/usr/lib/postgresql", version, "bin");
      if (isExecutable(join(dir, "postgres")) && isExecutable(join(dir, "initdb"))) return dir;
    }
  } catch {
    // no Debian layout
  }
  const postgres = which("postgres");
  const initdb = which("initdb");
  if (postgres && initdb) return join(postgres, "..");
  throw new MissingBinaryError("postgres (with initdb)", "postgresql", "DATABASE_URL");
}

/** The last `bytes` of a file, or "" when it cannot be read. */
export function tail(path: string, bytes = 4000): string {
  try {
    const text = readFileSync(path, "utf8");
    return text.length > bytes ? `…${text.slice(-bytes)}` : text;
  } catch {
    return "";
  }
}

/** Returns a promise and the functions that settle it. */
export function deferred<T>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
