import { type ChildProcess, fork } from "node:child_process";
import { onTestFinished } from "vitest";
import { nodeChildArgs } from "./node.js";

/** Every reply a child sends has a `type`; an `"error"` reply carries a message. */
export interface ChildReply {
  readonly type: string;
  readonly message?: string;
}

/** How to start a child. */
export interface ChildOptions {
  /** Added to this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
  /** Another program to run node under (e.g. `faketime`); `execArgv` then names node and its flags. */
  readonly execPath?: string;
  /** Default: `nodeChildArgs` (TypeScript from source). */
  readonly execArgv?: readonly string[];
}

/**
 * A TypeScript module run in another OS process and driven over IPC: the
 * shape every multi-process test here takes (send a command, wait for a
 * typed reply). The child is killed when the test that made it ends.
 */
export class ChildDriver<Command, Reply extends ChildReply> {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  readonly #replies: Reply[] = [];
  #wake: (() => void) | undefined;

  constructor(module: string, options: ChildOptions = {}) {
    this.child = fork(module, [], {
      execPath: options.execPath ?? process.execPath,
      execArgv: [...(options.execArgv ?? nodeChildArgs)],
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
    this.child.on("message", (reply: Reply) => {
      this.#replies.push(reply);
      this.#wake?.();
    });
    onTestFinished(async () => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return;
      // SIGCONT first: a stopped process does not act on SIGKILL's exit until it runs.
      this.child.kill("SIGCONT");
      this.child.kill("SIGKILL");
      await this.exited;
    });
  }

  send(command: Command): void {
    this.child.send(command as never);
  }

  /** Whether a reply of `type` has arrived (without consuming it). */
  has(type: Reply["type"]): boolean {
    return this.#replies.some((r) => r.type === type);
  }

  /**
   * The next reply of `type`. An `"error"` reply (unless that is what is
   * asked for), an exit or `timeoutMs` without it fail at once.
   */
  async next<T extends Reply["type"]>(
    type: T,
    timeoutMs = 30_000,
  ): Promise<Extract<Reply, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#replies.findIndex((r) => r.type === type || r.type === "error");
      if (index >= 0) {
        const [found] = this.#replies.splice(index, 1);
        if (found!.type === "error" && type !== "error") {
          throw new Error(`child process failed: ${found!.message}`);
        }
        return found as Extract<Reply, { type: T }>;
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(
          `child exited (${this.child.exitCode ?? this.child.signalCode}) before "${type}"`,
        );
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no "${type}" reply from the child within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}
