import { type ChildProcess, spawn } from "node:child_process";
import { ExitCode } from "./exit-codes.js";
import { signalExitCode } from "./signals.js";

/** How the command ended. */
export type ChildOutcome =
  | { readonly kind: "exited"; readonly code: number }
  | { readonly kind: "signaled"; readonly signal: NodeJS.Signals; readonly code: number }
  | { readonly kind: "not-started"; readonly problem: string; readonly code: number };

/** A running command and the promise of its outcome. */
export interface Command {
  readonly process: ChildProcess;
  readonly outcome: Promise<ChildOutcome>;
}

/**
 * Starts `command` (no shell) with this process's stdin, stdout and stderr
 * and the given environment.
 */
export function startCommand(
  command: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Command {
  const child = spawn(command, args, { stdio: "inherit", env });
  const outcome = new Promise<ChildOutcome>((resolve) => {
    let started = false;
    child.once("spawn", () => {
      started = true;
    });
    child.once("error", (error: NodeJS.ErrnoException) => {
      // After a start, "error" only means a signal could not be sent; "exit" still follows.
      if (started) return;
      resolve(
        error.code === "ENOENT"
          ? {
              kind: "not-started",
              problem: `command not found: ${command}`,
              code: ExitCode.notFound,
            }
          : {
              kind: "not-started",
              problem: `cannot execute ${command}: ${error.message}`,
              code: ExitCode.cannotExecute,
            },
      );
    });
    child.once("exit", (code, signal) => {
      resolve(
        signal !== null
          ? { kind: "signaled", signal, code: signalExitCode(signal) }
          : { kind: "exited", code: code ?? 0 },
      );
    });
  });
  return { process: child, outcome };
}

/** "exited with code 3", "was killed by SIGTERM", for messages. */
export function describeOutcome(outcome: ChildOutcome): string {
  switch (outcome.kind) {
    case "exited":
      return `exited with code ${outcome.code}`;
    case "signaled":
      return `was ended by ${outcome.signal}`;
    case "not-started":
      return `did not start (${outcome.problem})`;
  }
}
