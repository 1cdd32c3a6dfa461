import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { removeDir, trackGroup, untrackGroup } from "./registry.js";
import { deferred, sleep, tail } from "./util.js";

/** A real server process started by the testkit. */
export interface ServerProcess {
  /** The pid of the running server (it changes on restart). */
  readonly pid: number;
  /** SIGSTOP the server's whole process group: it stops answering, connections stay open. */
  pause(): void;
  /** SIGCONT the process group. */
  resume(): void;
  /**
   * Sends `signal` (default SIGKILL) and resolves when the server exited.
   * SIGKILL goes to the whole process group (a crash, postgres backends
   * included); other signals go to the server process only, followed by
   * SIGCONT so a paused server can act on them. The data directory stays,
   * so {@link restart} can bring the server back.
   */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Graceful stop (SIGKILL after a grace period); idempotent; removes the temporary directory. */
  stop(): Promise<void>;
  /** Stops the server if it runs, starts it again on the same port and data dir, resolves when ready. */
  restart(): Promise<void>;
}

/** How to run one server process. */
export interface SpawnSpec {
  command: string;
  args: string[];
  cwd: string;
  /** A file that receives the process's stdout and stderr. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  uid?: number;
  gid?: number;
}

/** Thrown when a server did not become ready; `addressInUse` asks the caller to retry on new ports. */
export class StartError extends Error {
  override readonly name = "StartError";
  constructor(
    message: string,
    readonly addressInUse: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const ADDRESS_IN_USE =
  /address already in use|EADDRINUSE|could not bind|could not create any TCP\/IP sockets/i;

interface Running {
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
  done: boolean;
}

/**
 * Waits for the process to exit. Server processes are unref'd (a forgotten
 * server never keeps the test runner alive), so keep the event loop alive
 * while someone waits for one.
 */
async function exitOf(running: Running): Promise<void> {
  if (running.done) return;
  const keepAlive = setInterval(() => {}, 60_000);
  try {
    await running.exited;
  } finally {
    clearInterval(keepAlive);
  }
}

export interface ManagedOptions {
  /** Human name for messages, e.g. "redis-server on 127.0.0.1:6379". */
  describe: () => string;
  spawnSpec: () => SpawnSpec;
  /** One readiness check; resolves true when the server answers as this very process. */
  probe: () => Promise<boolean>;
  /** Signal for a graceful stop (default SIGTERM). */
  stopSignal?: NodeJS.Signals;
  /** Directory removed by stop(). */
  dir?: string;
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

/** A server process with the {@link ServerProcess} life cycle. */
export class ManagedServer implements ServerProcess {
  #running: Running | undefined;
  #stopped: Promise<void> | undefined;
  readonly #options: ManagedOptions;

  constructor(options: ManagedOptions) {
    this.#options = options;
  }

  get pid(): number {
    return this.#running?.pid ?? 0;
  }

  /** Whether the server process is alive (possibly paused). */
  get running(): boolean {
    return this.#running !== undefined && !this.#running.done;
  }

  /** Spawns the process and waits until the probe succeeds. */
  async start(): Promise<void> {
    if (this.#stopped) throw new Error(`${this.#options.describe()} was stopped`);
    if (this.running) throw new Error(`${this.#options.describe()} is already running`);
    const spec = this.#options.spawnSpec();
    const logFd = openSync(spec.logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn(spec.command, spec.args, {
        cwd: spec.cwd,
        env: spec.env ?? process.env,
        stdio: ["ignore", logFd, logFd],
        detached: true,
        ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
        ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
      });
    } finally {
      closeSync(logFd);
    }
    const exit = deferred<void>();
    const spawnError = deferred<Error>();
    child.once("error", (error) => spawnError.resolve(error));
    const pid = child.pid;
    if (pid === undefined) {
      const error = await spawnError.promise;
      throw new StartError(`could not spawn ${spec.command}: ${error.message}`, false, {
        cause: error,
      });
    }
    child.unref();
    const running: Running = { child, pid, exited: exit.promise, done: false };
    child.once("exit", () => {
      running.done = true;
      untrackGroup(pid);
      exit.resolve();
    });
    this.#running = running;
    trackGroup(pid);

    const timeoutMs = this.#options.startTimeoutMs ?? 30_000;
    const deadline = performance.now() + timeoutMs;
    let lastError: unknown;
    for (;;) {
      if (running.done) {
        const log = tail(spec.logFile);
        throw new StartError(
          `${this.#options.describe()} exited during startup (exit code ${child.exitCode}, signal ${child.signalCode}). Log (${spec.logFile}):\n${log}`,
          ADDRESS_IN_USE.test(log),
        );
      }
      try {
        if (await this.#options.probe()) {
          if (!running.done) return;
          continue;
        }
      } catch (error) {
        lastError = error;
      }
      if (performance.now() > deadline) {
        await this.#killGroup(running, "SIGKILL");
        const reason =
          lastError instanceof Error ? ` (last probe error: ${lastError.message})` : "";
        throw new StartError(
          `${this.#options.describe()} did not become ready within ${timeoutMs} ms${reason}. Log (${spec.logFile}):\n${tail(spec.logFile)}`,
          false,
          { cause: lastError },
        );
      }
      await Promise.race([sleep(20), running.exited]);
    }
  }

  #signalGroup(running: Running, signal: NodeJS.Signals): void {
    try {
      process.kill(-running.pid, signal);
    } catch {
      // the group is gone
    }
  }

  async #killGroup(running: Running, signal: NodeJS.Signals): Promise<void> {
    this.#signalGroup(running, signal);
    await exitOf(running);
  }

  /**
   * SIGSTOPs the server and every process it forked. Its process group is not
   * enough: PostgreSQL's backends each call setsid(), so the sessions of
   * connected clients would go on answering.
   */
  pause(): void {
    const running = this.#running;
    if (!running || running.done) throw new Error(`${this.#options.describe()} is not running`);
    this.#signalGroup(running, "SIGSTOP");
    for (const pid of descendantsOf(running.pid)) signalPid(pid, "SIGSTOP");
  }

  resume(): void {
    const running = this.#running;
    if (!running || running.done) return;
    for (const pid of descendantsOf(running.pid)) signalPid(pid, "SIGCONT");
    this.#signalGroup(running, "SIGCONT");
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (signal === "SIGSTOP" || signal === "SIGTSTP" || signal === "SIGCONT") {
      throw new RangeError(`kill(${signal}): use pause() and resume() instead`);
    }
    const running = this.#running;
    if (!running || running.done) return;
    if (signal === "SIGKILL") {
      await this.#killGroup(running, "SIGKILL");
      return;
    }
    try {
      process.kill(running.pid, signal);
    } catch {
      // gone already
    }
    this.#signalGroup(running, "SIGCONT");
    await exitOf(running);
  }

  /** Graceful stop of the process only (the directory stays). */
  async shutdown(signal: NodeJS.Signals = this.#options.stopSignal ?? "SIGTERM"): Promise<void> {
    const running = this.#running;
    if (!running || running.done) return;
    try {
      process.kill(running.pid, signal);
    } catch {
      // gone already
    }
    this.#signalGroup(running, "SIGCONT");
    const graceMs = this.#options.stopTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), graceMs);
    });
    const outcome = await Promise.race([exitOf(running), timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") await this.#killGroup(running, "SIGKILL");
  }

  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      try {
        await this.shutdown();
      } finally {
        if (this.#options.dir) removeDir(this.#options.dir);
      }
    })();
    return this.#stopped;
  }

  restart(): Promise<void> {
    return this.restartAfter();
  }

  /** Stops the server with `stopSignal` if it runs, then starts it again on the same port. */
  protected async restartAfter(stopSignal?: NodeJS.Signals): Promise<void> {
    if (this.#stopped) throw new Error(`${this.#options.describe()} was stopped`);
    await this.shutdown(stopSignal);
    // The port must stay the same: wait out a competitor that grabbed it in between.
    const deadline = performance.now() + 10_000;
    for (;;) {
      try {
        await this.start();
        return;
      } catch (error) {
        if (!(error instanceof StartError && error.addressInUse) || performance.now() > deadline) {
          throw error;
        }
        await sleep(100);
      }
    }
  }
}

/**
 * Runs `attempt` until it does not fail with an address-in-use StartError
 * (a port taken by another process between freePort() and bind).
 */
export async function retryOnAddressInUse<T>(attempt: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof StartError && error.addressInUse) || i >= attempts) throw error;
    }
  }
}

/** Every live process below `root` in the process tree, read from /proc. */
function descendantsOf(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone
    }
    // "pid (comm) state ppid ...": comm may hold spaces, so read after its closing parenthesis.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  const visit = (pid: number): void => {
    for (const child of children.get(pid) ?? []) {
      found.push(child);
      visit(child);
    }
  };
  visit(root);
  return found;
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone already
  }
}
