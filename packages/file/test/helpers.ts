import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ChildDriver, nodeChildArgs } from "@locks/testkit";
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
export class Worker extends ChildDriver<WorkerCommand, WorkerReply> {
  /** The worker's own pid: under libfaketime the child process is its wrapper, which forks node. */
  #pid: number | undefined;

  constructor(options: WorkerOptions) {
    const env: NodeJS.ProcessEnv = {
      LOCKS_FILE_DIR: options.directory,
      LOCKS_NAMESPACE: options.namespace,
    };
    const offset = options.clockOffsetMs ?? 0;
    let wrapper: { execPath: string; execArgv: string[] } | undefined;
    if (offset !== 0 && faketime !== undefined) {
      const seconds = Math.round(offset / 1000);
      wrapper = {
        execPath: faketime,
        execArgv: [
          "-f",
          `${seconds >= 0 ? "+" : ""}${seconds}s`,
          process.execPath,
          ...nodeChildArgs,
        ],
      };
      env.FAKETIME_DONT_FAKE_MONOTONIC = "1";
    } else if (offset !== 0) {
      env.LOCKS_CLOCK_OFFSET_MS = String(offset);
    }
    super(workerEntry, { env, ...wrapper });
    this.child.on("message", (message: WorkerReply) => {
      if (message.type === "ready") this.#pid = message.pid;
    });
    onTestFinished(() => this.kill("SIGKILL"));
  }

  /** Signals the worker's node process (not a libfaketime wrapper around it). */
  kill(signal: NodeJS.Signals): void {
    if (this.#pid === undefined) {
      this.child.kill(signal);
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
