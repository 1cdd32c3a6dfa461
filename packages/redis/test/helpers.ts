import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { nodeChildArgs } from "@locks/testkit";
import { Redis } from "ioredis";
import { onTestFinished } from "vitest";
import type { WorkerCommand, WorkerReply } from "./fixtures/worker.js";

/** A fresh namespace per test: tests share servers and never wipe them. */
export function freshNamespace(): string {
  return `t-${randomBytes(6).toString("hex")}`;
}

/** The code of a rejection, or "resolved". */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (error) {
    return String((error as { code?: unknown }).code ?? error);
  }
}

/** A plain ioredis client for looking at the server, closed when the test ends. */
export function rawClient(url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  client.on("error", () => undefined);
  onTestFinished(() => {
    client.disconnect();
  });
  return client;
}

const workerModule = fileURLToPath(new URL("./fixtures/worker.ts", import.meta.url));

/** A lock client in another process (test/fixtures/worker.ts), killed when the test ends. */
export class Worker {
  readonly child: ChildProcess;
  readonly #replies: WorkerReply[] = [];
  readonly exited: Promise<number | null>;

  constructor(env: Record<string, string>) {
    this.child = fork(workerModule, [], {
      execArgv: nodeChildArgs,
      env: { ...process.env, ...env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.child.on("message", (message: WorkerReply) => this.#replies.push(message));
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
    onTestFinished(() => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        this.child.kill("SIGCONT");
        this.child.kill("SIGKILL");
      }
    });
  }

  send(command: WorkerCommand): void {
    this.child.send(command);
  }

  /** The next reply of `type`; an error reply or an exit fails at once. */
  async next<T extends WorkerReply["type"]>(
    type: T,
    timeoutMs = 30_000,
  ): Promise<Extract<WorkerReply, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#replies.findIndex((r) => r.type === type || r.type === "error");
      if (index >= 0) {
        const [found] = this.#replies.splice(index, 1);
        if (found?.type === "error") throw new Error(`worker failed: ${found.message}`);
        return found as Extract<WorkerReply, { type: T }>;
      }
      if (this.child.exitCode !== null)
        throw new Error(`worker exited with ${this.child.exitCode}`);
      if (performance.now() > deadline)
        throw new Error(`no "${type}" from the worker in ${timeoutMs} ms`);
      await sleep(5);
    }
  }
}
