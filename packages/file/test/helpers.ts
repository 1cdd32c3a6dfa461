import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { nodeChildArgs } from "@locks/testkit";
import { onTestFinished } from "vitest";
import type { WorkerCommand, WorkerReply } from "./fixtures/protocol.js";

const workerEntry = fileURLToPath(new URL("./fixtures/worker.ts", import.meta.url));

/** A fresh lock directory under the system's temp directory; removed by the returned function. */
export function tempDirectory(label: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `locks-file-${label}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function randomNamespace(): string {
  return `t-${randomBytes(6).toString("hex")}`;
}

/** libfaketime's wrapper, when installed (Debian package "faketime") and not disabled by LOCKS_NO_FAKETIME=1. */
export const faketime: string | undefined = (() => {
  if (process.env.LOCKS_NO_FAKETIME === "1") return undefined;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, "faketime"), constants.X_OK);
      return join(dir, "faketime");
    } catch {
      // not here
    }
  }
  return undefined;
})();

export interface WorkerOptions {
  readonly directory: string;
  readonly namespace: string;
  /**
   * Runs the worker with its wall clock shifted by this many ms: under
   * libfaketime when installed (monotonic clock untouched), otherwise by
   * shifting Date.now() inside the worker.
   */
  readonly clockOffsetMs?: number;
}

/** A lock client in another OS process (fixtures/worker.ts), killed when the test ends. */
export class Worker {
  readonly #child: ChildProcess;
  readonly #replies: WorkerReply[] = [];
  #wake: (() => void) | undefined;
  /** The worker's own pid: under libfaketime the child process is its wrapper, which forks node. */
  #pid: number | undefined;
  readonly exited: Promise<void>;

  constructor(options: WorkerOptions) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      LOCKS_FILE_DIR: options.directory,
      LOCKS_NAMESPACE: options.namespace,
    };
    const offset = options.clockOffsetMs ?? 0;
    let execPath = process.execPath;
    let execArgv = nodeChildArgs;
    if (offset !== 0 && faketime !== undefined) {
      const seconds = Math.round(offset / 1000);
      execPath = faketime;
      execArgv = [
        "-f",
        `${seconds >= 0 ? "+" : ""}${seconds}s`,
        process.execPath,
        ...nodeChildArgs,
      ];
      env.FAKETIME_DONT_FAKE_MONOTONIC = "1";
    } else if (offset !== 0) {
      env.LOCKS_CLOCK_OFFSET_MS = String(offset);
    }
    this.#child = fork(workerEntry, [], {
      execPath,
      execArgv,
      env,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.exited = new Promise((resolve) => this.#child.once("exit", () => resolve()));
    this.#child.on("message", (message: WorkerReply) => {
      if (message.type === "ready") this.#pid = message.pid;
      this.#replies.push(message);
      this.#wake?.();
    });
    onTestFinished(async () => {
      if (this.#child.exitCode === null && this.#child.signalCode === null) {
        this.kill("SIGKILL");
        this.#child.kill("SIGKILL");
        await this.exited;
      }
    });
  }

  send(command: WorkerCommand): void {
    this.#child.send(command);
  }

  /** The next reply of `type`; fails on an error reply, an early exit, or after `timeoutMs`. */
  async next<T extends WorkerReply["type"]>(
    type: T,
    timeoutMs = 30_000,
  ): Promise<Extract<WorkerReply, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#replies.findIndex((r) => r.type === type || r.type === "error");
      if (index >= 0) {
        const [found] = this.#replies.splice(index, 1);
        if (found!.type === "error" && type !== "error") {
          throw new Error(`worker failed: ${found!.message}`);
        }
        return found as Extract<WorkerReply, { type: T }>;
      }
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
        throw new Error(
          `worker exited (${this.#child.exitCode ?? this.#child.signalCode}) before "${type}"`,
        );
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no "${type}" reply from the worker within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Whether a reply of `type` has arrived (without consuming it). */
  has(type: WorkerReply["type"]): boolean {
    return this.#replies.some((r) => r.type === type);
  }

  /** Signals the worker's node process (not a libfaketime wrapper around it). */
  kill(signal: NodeJS.Signals): void {
    if (this.#pid === undefined) {
      this.#child.kill(signal);
      return;
    }
    try {
      process.kill(this.#pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Starts `n` workers and waits until each is ready. */
export async function startWorkers(n: number, options: WorkerOptions): Promise<Worker[]> {
  const workers = Array.from({ length: n }, () => new Worker(options));
  await Promise.all(workers.map((w) => w.next("ready")));
  return workers;
}
