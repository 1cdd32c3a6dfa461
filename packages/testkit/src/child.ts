import { type ChildProcess, fork } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { onTestFinished } from "vitest";
import { nodeChildArgs } from "./node.js";

/**
 * Where a child's backend comes from: `module`'s export `export` (default
 * `"default"`), called with `options`. `module` is a path or file URL (the
 * child cannot resolve a test's packages by name); `options` must survive
 * structured cloning (no functions).
 */
export interface BackendSpec {
  readonly module: string | URL;
  readonly export?: string;
  readonly options?: unknown;
}

/** How to start a {@link LockChild}. */
export interface LockChildOptions {
  readonly backend: BackendSpec;
  readonly namespace: string;
  /** More options of `createLocks` (e.g. `ttlMs`); `namespace` is set above. */
  readonly locks?: Readonly<Record<string, unknown>>;
  /**
   * A module whose default export (a {@link ChildSetup}) runs in the child once
   * the backend exists: it can add commands (see {@link LockChild.command})
   * and send events, e.g. to arm a store's failpoints.
   */
  readonly setup?: string | URL;
  /**
   * Runs the child with its wall clock shifted by this many ms: under
   * libfaketime when installed (whole seconds; the monotonic clock untouched),
   * otherwise by shifting `Date.now()` inside the child.
   */
  readonly clockOffsetMs?: number;
  /** Added to this process's environment. */
  readonly env?: NodeJS.ProcessEnv;
  /** How long any reply may take (an acquire's own `timeoutMs` is added). Default 30 000. */
  readonly replyTimeoutMs?: number;
  /** After a SIGTERM, how long before SIGKILL (as `timeout -k`). Default 2 000. */
  readonly killAfterMs?: number;
}

/** Options of an acquire in the child: those of `Locks.acquire`, cloned over IPC. */
export interface ChildAcquireOptions {
  readonly ttlMs?: number;
  readonly timeoutMs?: number;
  readonly mode?: "exclusive" | "shared";
  readonly limit?: number;
  readonly [option: string]: unknown;
}

/** A lease held in the child. Times are `historyNow()` values, comparable across processes. */
export interface ChildLease {
  /** The child's handle on the lease, for `release` and `extend`. */
  readonly id: number;
  readonly key: string;
  readonly token: bigint;
  /** When the child saw the grant. */
  readonly at: number;
}

/** One `extend()` the core made through the child's backend, and its outcome. */
export interface ChildExtension {
  readonly at: number;
  readonly ok: boolean;
}

/** Something the child reports unasked: a lost lease, or an event of its setup module. */
export interface ChildEvent {
  readonly type: string;
  readonly [field: string]: unknown;
}

/** The event of a lease whose signal aborted (other than by a release the parent asked for). */
export interface LostEvent extends ChildEvent {
  readonly type: "lost";
  readonly lease: number;
  readonly key: string;
  readonly code: string;
  readonly at: number;
  /** Every extend() the child's backend saw so far, to tell what happened around a pause. */
  readonly extensions: readonly ChildExtension[];
}

/** Critical sections of {@link LockChild.contend}. */
export interface ContendOptions {
  readonly loops: number;
  /** Concurrent loops in the child (default 1). */
  readonly tasks?: number;
  /** "mixed": shared but every third hold exclusive (default "exclusive"). */
  readonly mode?: "exclusive" | "shared" | "mixed";
  /** A semaphore of this many holders (default: a plain lock). */
  readonly limit?: number;
  /**
   * Each hold lasts one turn of the event loop, plus `holdMs[i % length]` ms
   * (default `[0]`).
   */
  readonly holdMs?: readonly number[];
  /**
   * A file each hold appends `${pid} ${i} ${token}\n` to, in two writes with a
   * turn of the event loop between: without mutual exclusion lines interleave.
   */
  readonly log?: string;
  /** Of each acquire (default 60 000). */
  readonly timeoutMs?: number;
}

/** The same shape as `@locks/core/history`'s HoldRecord (testkit does not depend on core). */
export interface ChildHoldRecord {
  readonly owner: string;
  readonly key: string;
  readonly mode: "exclusive" | "shared";
  readonly limit: number;
  readonly token: string;
  readonly acquiredAt: number;
  releasedAt?: number;
  lostAt?: number;
}

/** What a setup module (`LockChildOptions.setup`) gets in the child. */
export interface ChildContext {
  /** The backend the child's client runs on (before the child's recording wrapper). */
  readonly backend: unknown;
  /** Adds a command; its result (structured-cloneable) is the reply. */
  command(name: string, run: (args: unknown) => unknown): void;
  /** Sends an event; resolves once it left this process (e.g. before stopping itself). */
  emit(event: ChildEvent): Promise<void>;
}

/** The default export of a setup module. */
export type ChildSetup = (child: ChildContext) => void | Promise<void>;

/** Messages from parent to child (internal). */
export type ChildRequest =
  | {
      readonly type: "start";
      readonly backend: {
        readonly module: string;
        readonly export: string;
        readonly options: unknown;
      };
      readonly namespace: string;
      readonly locks: Readonly<Record<string, unknown>>;
      readonly setup: string | undefined;
    }
  | { readonly type: "call"; readonly id: number; readonly name: string; readonly args: unknown };

/** Messages from child to parent (internal). */
export type ChildMessage =
  | { readonly type: "ready"; readonly pid: number }
  | { readonly type: "reply"; readonly id: number; readonly value: unknown }
  | {
      readonly type: "failed";
      readonly id: number;
      readonly message: string;
      readonly code: string;
    }
  | { readonly type: "event"; readonly event: ChildEvent };

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

const entry = fileURLToPath(
  new URL(`./child-main${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url),
);

function path(where: string | URL): string {
  return where instanceof URL || where.startsWith("file:") ? fileURLToPath(where) : where;
}

interface Pending {
  readonly name: string;
  readonly promise: Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * A lock client in another OS process (Node, TypeScript from source), driven
 * over IPC: the one harness of every multi-process test. The child builds
 * its backend from a module the parent names, then obeys commands, each
 * answered by a reply within a deadline. A child that misses a deadline is
 * taken for frozen and ended as `timeout -k` would (SIGTERM, SIGKILL after
 * `killAfterMs`); every child still running when the test that made it ends
 * is killed.
 *
 * ```ts
 * const child = await LockChild.start({ backend: { module, export: "fileBackend", options }, namespace });
 * const lease = await child.acquire("k", { ttlMs: 1_000 });
 * child.kill("SIGSTOP");
 * ```
 */
export class LockChild {
  readonly process: ChildProcess;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** The pid of the child's node (under libfaketime, `process` is its wrapper). */
  pid: number;
  readonly #replyTimeoutMs: number;
  readonly #killAfterMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #events: ChildEvent[] = [];
  #wake: (() => void) | undefined;
  #nextId = 0;
  /** Set when this side ends the child on purpose: what is pending then is not a failure. */
  #ending = false;

  /** Starts a child and resolves once its backend and client exist. */
  static async start(options: LockChildOptions): Promise<LockChild> {
    const child = new LockChild(options);
    try {
      await child.#ready;
    } catch (error) {
      await child.#kill();
      throw error;
    }
    return child;
  }

  /** Starts `n` children at once. */
  static startMany(n: number, options: LockChildOptions): Promise<LockChild[]> {
    return Promise.all(Array.from({ length: n }, () => LockChild.start(options)));
  }

  readonly #ready: Promise<void>;

  private constructor(options: LockChildOptions) {
    this.#replyTimeoutMs = options.replyTimeoutMs ?? 30_000;
    this.#killAfterMs = options.killAfterMs ?? 2_000;
    const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
    let execPath = process.execPath;
    let execArgv = [...nodeChildArgs];
    const offset = options.clockOffsetMs ?? 0;
    if (offset !== 0 && faketime !== undefined) {
      const seconds = Math.round(offset / 1000);
      execPath = faketime;
      execArgv = ["-f", `${seconds >= 0 ? "+" : ""}${seconds}s`, process.execPath, ...execArgv];
      env.FAKETIME_DONT_FAKE_MONOTONIC = "1";
    } else if (offset !== 0) {
      env.LOCKS_CLOCK_OFFSET_MS = String(offset);
    }
    this.process = fork(entry, [], {
      execPath,
      execArgv,
      env,
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.pid = this.process.pid ?? -1;
    this.exited = new Promise((resolve) => {
      this.process.once("exit", (code) => {
        for (const [id, pending] of this.#pending) {
          if (this.#ending) pending.promise.catch(() => undefined);
          this.#settle(id)?.reject(
            new Error(
              `child ${this.pid} exited (${code ?? this.process.signalCode}) before replying to ${pending.name}`,
            ),
          );
        }
        this.#wake?.();
        resolve(code);
      });
    });
    this.process.on("message", (message: ChildMessage) => this.#receive(message));
    try {
      onTestFinished(() => this.#kill());
    } catch {
      // Not inside a test (e.g. in beforeAll): the caller ends it.
    }
    this.#ready = this.#call(
      "start",
      () => ({
        type: "start",
        backend: {
          module: path(options.backend.module),
          export: options.backend.export ?? "default",
          options: options.backend.options,
        },
        namespace: options.namespace,
        locks: options.locks ?? {},
        setup: options.setup === undefined ? undefined : path(options.setup),
      }),
      // Starting node with a TypeScript loader and importing a backend is slow on a loaded machine.
      30_000,
    ).then((pid) => {
      this.pid = pid as number;
    });
  }

  /** Acquires `key` and keeps the lease; its loss arrives as a "lost" event. */
  acquire(key: string, options: ChildAcquireOptions = {}): Promise<ChildLease> {
    return this.call("acquire", { key, options }, options.timeoutMs) as Promise<ChildLease>;
  }

  /** One attempt; null when the key is taken. */
  tryAcquire(key: string, options: ChildAcquireOptions = {}): Promise<ChildLease | null> {
    return this.call("tryAcquire", { key, options }) as Promise<ChildLease | null>;
  }

  /** Releases a lease the child holds, or every one it holds when none is named. */
  async release(lease?: ChildLease): Promise<void> {
    await this.call("release", { lease: lease?.id });
  }

  /** Extends a lease; resolves with its new `expiresAt` (the child's wall clock; undefined without a TTL). */
  extend(lease: ChildLease, ttlMs?: number): Promise<number | undefined> {
    return this.call("extend", { lease: lease.id, ttlMs }) as Promise<number | undefined>;
  }

  /** Runs `loops` critical sections on `key` in each of `tasks` loops; resolves with their holds. */
  contend(key: string, options: ContendOptions): Promise<ChildHoldRecord[]> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    return this.call("contend", { key, ...options, timeoutMs }, timeoutMs) as Promise<
      ChildHoldRecord[]
    >;
  }

  /** Keeps the child's event loop busy for `ms` (no timer, no socket read); resolves with when it ended. */
  block(ms: number): Promise<number> {
    return this.call("block", { ms }, ms) as Promise<number>;
  }

  /**
   * Any command, a setup module's included. The reply must come within the
   * reply timeout plus `extraMs`.
   */
  call(name: string, args: unknown = {}, extraMs = 0): Promise<unknown> {
    return this.#call(name, (id) => ({ type: "call", id, name, args }), extraMs);
  }

  /** The next event of `type` (consumed). Fails when the child exits or `timeoutMs` passes first. */
  next(type: "lost", timeoutMs?: number): Promise<LostEvent>;
  next(type: string, timeoutMs?: number): Promise<ChildEvent>;
  async next(type: string, timeoutMs = this.#replyTimeoutMs): Promise<ChildEvent> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#events.findIndex((e) => e.type === type);
      if (index >= 0) return this.#events.splice(index, 1)[0]!;
      if (this.#gone()) throw new Error(`child ${this.pid} exited before a "${type}" event`);
      const left = deadline - performance.now();
      if (left <= 0)
        throw new Error(`no "${type}" event from child ${this.pid} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Whether an event of `type` arrived (not consumed). */
  has(type: string): boolean {
    return this.#events.some((e) => e.type === type);
  }

  /** How many commands await their reply. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Sends a signal to the child's node (SIGSTOP, SIGCONT, SIGKILL...). */
  kill(signal: NodeJS.Signals): void {
    if (signal === "SIGKILL" || signal === "SIGTERM") this.#ending = true;
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }

  /** The child calls `process.exit(code)` holding what it holds (exit handlers run); resolves with its exit code. */
  exit(code = 0): Promise<number | null> {
    this.#ending = true;
    this.process.send({
      type: "call",
      id: -1,
      name: "exit",
      args: { code },
    } satisfies ChildRequest);
    return this.#exit();
  }

  /** The child SIGKILLs itself once it reaches this command: no exit handler runs, nothing is released. */
  crash(): Promise<number | null> {
    this.#ending = true;
    this.process.send({ type: "call", id: -1, name: "crash", args: {} } satisfies ChildRequest);
    return this.#exit();
  }

  /**
   * Closes the child's client; the child must then exit by itself within
   * `withinMs` (proof that close() left no handle open), else it is killed
   * and this throws. Resolves with the exit code.
   */
  async close(withinMs = 10_000): Promise<number | null> {
    await this.call("close");
    const code = await Promise.race([this.exited, sleep(withinMs).then(() => "late" as const)]);
    if (code !== "late") return code;
    await this.#kill();
    throw new Error(`child ${this.pid} did not exit by itself within ${withinMs} ms of close()`);
  }

  #call(name: string, request: (id: number) => ChildRequest, extraMs = 0): Promise<unknown> {
    const id = this.#nextId++;
    let resolve!: (value: unknown) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<unknown>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    if (this.#gone()) {
      reject(new Error(`child ${this.pid} has exited: cannot ${name}`));
      return promise;
    }
    const waitMs = this.#replyTimeoutMs + extraMs;
    const timer = setTimeout(() => {
      this.#settle(id)?.reject(
        new Error(`no reply to ${name} from child ${this.pid} within ${waitMs} ms: killed it`),
      );
      void this.#kill(true);
    }, waitMs);
    this.#pending.set(id, { name, promise, resolve, reject, timer });
    this.process.send(request(id));
    return promise;
  }

  #receive(message: ChildMessage): void {
    switch (message.type) {
      case "ready":
        this.#settle(0)?.resolve(message.pid);
        return;
      case "reply":
        this.#settle(message.id)?.resolve(message.value);
        return;
      case "failed":
        this.#settle(message.id)?.reject(
          Object.assign(new Error(`child ${this.pid}: ${message.message}`), { code: message.code }),
        );
        return;
      case "event":
        this.#events.push(message.event);
        this.#wake?.();
        return;
    }
  }

  #settle(id: number): Pending | undefined {
    const pending = this.#pending.get(id);
    if (pending === undefined) return undefined;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    return pending;
  }

  #gone(): boolean {
    return this.process.exitCode !== null || this.process.signalCode !== null;
  }

  /** The exit of a child asked to end: killed when it does not within the reply timeout. */
  async #exit(): Promise<number | null> {
    const code = await Promise.race([
      this.exited,
      sleep(this.#replyTimeoutMs).then(() => "late" as const),
    ]);
    if (code !== "late") return code;
    await this.#kill(true);
    throw new Error(`child ${this.pid} did not exit within ${this.#replyTimeoutMs} ms`);
  }

  /** Ends the child: SIGTERM then SIGKILL after `killAfterMs` when `gently`, else SIGKILL at once. */
  async #kill(gently = false): Promise<void> {
    this.#ending = true;
    if (this.#gone()) return;
    // SIGCONT first: a stopped process does not act on a signal's exit until it runs.
    for (const signal of ["SIGCONT", gently ? "SIGTERM" : "SIGKILL"] as const) this.kill(signal);
    if (gently && (await Promise.race([this.exited.then(() => true), sleep(this.#killAfterMs)]))) {
      return;
    }
    this.kill("SIGKILL");
    // Under libfaketime the wrapper is the direct child.
    if (this.process.pid !== this.pid) this.process.kill("SIGKILL");
    await this.exited;
  }
}

function sleep(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms).unref());
}
