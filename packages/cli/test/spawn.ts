import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { waitFor } from "@locks/testkit";
import { inject } from "vitest";

/** The bin, built from src/ for this run (test/bin-setup.ts). */
const BIN = inject("locksBin");
/** Its code cache, beside it: the tests run with the cache as users do, in a directory of their own. */
const COMPILE_CACHE = join(dirname(BIN), "..", "compile-cache");

/** How a `locks` process ended. */
export interface Ended {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A `locks` process, as a user would run the command. */
export interface LocksProcess {
  readonly process: ChildProcess;
  stdout(): string;
  stderr(): string;
  readonly ended: Promise<Ended>;
  /** Resolves once stdout (or stderr) contains `text`. */
  waitForOutput(text: string, stream?: "stdout" | "stderr"): Promise<void>;
  /** Closes stdin: the hold scripts below exit when it ends. */
  endInput(): void;
}

/** Runs `locks` processes for one test and ends the ones still running when the test finishes. */
export interface LocksCli {
  /** Starts `locks <args>` with piped stdio (the command inherits them from `locks`). */
  start(args: readonly string[]): LocksProcess;
  /** Runs `locks <args>` to the end, stdin closed. */
  run(args: readonly string[]): Promise<Ended>;
}

/**
 * A `LocksCli` for the current test: pass the test context's
 * `onTestFinished` (safe with concurrent tests), extra environment and the
 * working directory (default: this process's).
 */
export function locksCli(
  onTestFinished: (fn: () => Promise<void>) => void,
  env: NodeJS.ProcessEnv = {},
  cwd?: string,
): LocksCli {
  const running = new Set<LocksProcess>();
  onTestFinished(async () => {
    const left = [...running];
    for (const handle of left) {
      handle.endInput();
      handle.process.kill("SIGKILL");
    }
    await Promise.allSettled(left.map((handle) => handle.ended));
  });
  const start = (args: readonly string[]): LocksProcess => {
    const handle = startLocks(args, env, cwd);
    running.add(handle);
    void handle.ended.finally(() => running.delete(handle)).catch(() => {});
    return handle;
  };
  return {
    start,
    run: (args) => {
      const handle = start(args);
      handle.endInput();
      return handle.ended;
    },
  };
}

function startLocks(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  cwd: string | undefined,
): LocksProcess {
  const [command = process.execPath, ...argv] = locksCommandLine(args);
  const child = spawn(command, argv, {
    ...(cwd === undefined ? {} : { cwd }),
    env: { ...process.env, ...LOCKS_ENV, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  child.stdin?.on("error", () => {});
  const ended = new Promise<Ended>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  const handle: LocksProcess = {
    process: child,
    stdout: () => stdout,
    stderr: () => stderr,
    ended,
    waitForOutput: async (text, stream = "stdout") => {
      const seen = waitFor(() => (stream === "stdout" ? stdout : stderr).includes(text), {
        // Generous: a loaded machine.
        timeoutMs: 60_000,
        message: `${JSON.stringify(text)} from locks ${args.join(" ")}`,
      });
      const exitedFirst = ended.then(() => {
        throw new Error("locks exited first");
      });
      // Whichever loses settles later, unobserved.
      seen.catch(() => {});
      exitedFirst.catch(() => {});
      await Promise.race([seen, exitedFirst]).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}\nstdout: ${stdout}\nstderr: ${stderr}`);
      });
    },
    endInput: () => {
      child.stdin?.end();
    },
  };
  return handle;
}

/** What every `locks` of the tests runs with: no backend or namespace from the caller's environment. */
const LOCKS_ENV = { LOCKS_BACKEND: "", LOCKS_NAMESPACE: "", LOCKS_COMPILE_CACHE: COMPILE_CACHE };

/** The command line that runs `locks <args>`. */
export function locksCommandLine(args: readonly string[]): string[] {
  return [process.execPath, BIN, ...args];
}

/** `node -e <script>` as a command line for `locks run ... -- <command>`. */
export function nodeCommand(script: string): string[] {
  return [process.execPath, "-e", script];
}

/**
 * A command that prints `ready <token>`, holds until its stdin ends (then
 * exits 0), and on SIGTERM prints `got SIGTERM` and exits 42 (or, with
 * `ignoreTerm`, prints it and keeps running). It exits by itself after five
 * minutes (past any test's timeout), so nothing outlives a broken test for long.
 */
export function holdCommand(options: { ignoreTerm?: boolean } = {}): string[] {
  const onTerm = options.ignoreTerm
    ? `process.on("SIGTERM", () => process.stdout.write("got SIGTERM\\n"));`
    : `process.on("SIGTERM", () => { process.stdout.write("got SIGTERM\\n"); process.exit(42); });`;
  return nodeCommand(
    `${onTerm}
     process.stdin.on("end", () => process.exit(0)).resume();
     setTimeout(() => process.exit(3), 300_000);
     process.stdout.write("ready " + process.env.LOCKS_FENCING_TOKEN + "\\n");`,
  );
}

/**
 * A command that prints LOCKS_KEY, appends `start <id> <LOCKS_FENCING_TOKEN> <time>`,
 * holds for `holdMs`, then appends `end <id> <time>` to `file` (times: ms of
 * the host's monotonic clock, which every process of this machine shares).
 */
export function appendCommand(file: string, id: string, holdMs: number): string[] {
  return nodeCommand(
    `const fs = require("node:fs");
     const now = () => Number(process.hrtime.bigint()) / 1e6;
     const file = ${JSON.stringify(file)};
     console.log(process.env.LOCKS_KEY);
     fs.appendFileSync(file, "start ${id} " + process.env.LOCKS_FENCING_TOKEN + " " + now() + "\\n");
     setTimeout(() => fs.appendFileSync(file, "end ${id} " + now() + "\\n"), ${holdMs});`,
  );
}

/** `locks` on a pseudo-terminal (stdin, stdout and stderr), as a user at a terminal runs it. */
export interface TerminalLocks {
  /** Everything the terminal showed so far (the pty turns "\n" into "\r\n"). */
  output(): string;
  /** Types on the terminal: "\x03" is Ctrl-C. */
  type(text: string): void;
  /** The exit code of `locks`. */
  readonly exited: Promise<number | null>;
}

/** Whether util-linux script(1), which `onTerminal` needs, is installed. */
export const hasScript = spawnSync("script", ["--version"]).status === 0;

/**
 * Runs `locks <args>` on a pseudo-terminal through script(1), `exec`ed so
 * that `locks` is the terminal's foreground process; killed when the test ends.
 */
export function onTerminal(
  args: readonly string[],
  onTestFinished: (fn: () => void) => void,
): TerminalLocks {
  const shellQuote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
  const line = `exec ${locksCommandLine(args).map(shellQuote).join(" ")}`;
  const terminal = spawn("script", ["-qec", line, "/dev/null"], {
    env: { ...process.env, ...LOCKS_ENV },
    stdio: ["pipe", "pipe", "pipe"],
  });
  onTestFinished(() => {
    terminal.kill("SIGKILL");
  });
  let output = "";
  terminal.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  terminal.stdin.on("error", () => {});
  return {
    output: () => output,
    type: (text) => {
      terminal.stdin.write(text);
    },
    exited: new Promise((resolve) => terminal.once("close", resolve)),
  };
}
