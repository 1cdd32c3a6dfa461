import { ExitCode } from "./exit-codes.js";
import { UsageError } from "./usage-error.js";

/** The standard streams written to: created on first use (a few ms), so only those are flushed. */
const written = new Set<NodeJS.WriteStream>();

/** Writes to stdout or stderr; every output of `locks` goes through here. */
export function write(stream: "stdout" | "stderr", text: string): void {
  const target = process[stream];
  written.add(target);
  target.write(text);
}

/** Resolves once what was written has been handed to the OS: before `process.exit`, which drops the rest. */
export function flushOutput(): Promise<void> {
  return Promise.all(
    [...written].map(
      (stream) =>
        new Promise<void>((resolve) => {
          if (stream.destroyed || !stream.writable) resolve();
          else stream.write("", () => resolve());
        }),
    ),
  ).then(() => undefined);
}

/** Writes one line to stderr, prefixed with `locks: ` unless it names its command already. */
export function say(message: string): void {
  const line = message.startsWith("locks ") ? message : `locks: ${message}`;
  write("stderr", `${line}\n`);
}

/**
 * Reports an error that ends `locks` as one line (no stack trace, unless
 * LOCKS_DEBUG is set) and returns the exit code: 2 for bad input and
 * unreachable servers, 1 for anything unexpected.
 */
export function reportError(error: unknown, env: NodeJS.ProcessEnv): number {
  const debug = env.LOCKS_DEBUG !== undefined && env.LOCKS_DEBUG !== "" && env.LOCKS_DEBUG !== "0";
  if (debug && error instanceof Error && error.stack !== undefined)
    write("stderr", `${error.stack}\n`);
  if (error instanceof UsageError) {
    say(error.message);
    return ExitCode.usage;
  }
  // Checked by code, as LockErrors are; not with @locks/core's isLockError, so that
  // `locks --version` and `--help` do not load the core.
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "INVALID_ARGUMENT" || code === "BACKEND_UNAVAILABLE") {
    say(firstLine((error as Error).message));
    return ExitCode.usage;
  }
  say(`internal error: ${firstLine(error instanceof Error ? error.message : String(error))}`);
  return ExitCode.internal;
}

function firstLine(text: string): string {
  return text.split("\n", 1)[0] ?? text;
}
