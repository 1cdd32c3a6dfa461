import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Capabilities } from "../backend.js";
import { contend, Harness } from "./harness.js";
import { History } from "./history.js";
import type { ConformanceOptions } from "./options.js";
import { CHILD_ENV, type ChildCommand, type ChildReply } from "./protocol.js";

const childEntry = fileURLToPath(
  new URL(`./child${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url),
);
const fromSource = import.meta.url.endsWith(".ts");

/** A backend instance in another OS process, driven over IPC. */
class Contender {
  readonly #child: ChildProcess;
  readonly #replies: ChildReply[] = [];
  #wake: (() => void) | undefined;
  readonly exited: Promise<number | null>;

  constructor(options: ConformanceOptions, namespace: string) {
    const spec = options.process!;
    const execArgv =
      spec.execArgv ?? (fromSource ? ["--import", "tsx", "--conditions=@locks/source"] : []);
    this.#child = fork(childEntry, [], {
      execArgv: [...execArgv],
      env: {
        ...process.env,
        ...spec.env,
        [CHILD_ENV.module]: spec.module,
        [CHILD_ENV.namespace]: namespace,
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.exited = new Promise((resolve) => this.#child.once("exit", (code) => resolve(code)));
    this.#child.on("message", (message: ChildReply) => {
      this.#replies.push(message);
      this.#wake?.();
    });
    onTestFinished(() => {
      if (this.#child.exitCode === null && this.#child.signalCode === null)
        this.#child.kill("SIGKILL");
    });
  }

  send(command: ChildCommand): void {
    this.#child.send(command);
  }

  /** The next reply of `type`; fails on an error reply, an early exit or after `timeoutMs`. */
  async next<T extends ChildReply["type"]>(
    type: T,
    timeoutMs = 60_000,
  ): Promise<Extract<ChildReply, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.#replies.findIndex((r) => r.type === type || r.type === "error");
      if (index >= 0) {
        const [found] = this.#replies.splice(index, 1);
        if (found!.type === "error") throw new Error(`child process failed: ${found!.message}`);
        return found as Extract<ChildReply, { type: T }>;
      }
      if (this.#child.exitCode !== null)
        throw new Error(`child exited with ${this.#child.exitCode}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no "${type}" reply from the child within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.#child.kill(signal);
  }
}

/** Contention between OS processes, a holder killed mid-hold, and a clean exit after close(). */
export function processTests(options: ConformanceOptions, capabilities: Capabilities): void {
  const single = capabilities.scope === "process";
  const loops = options.iterations ?? 25;

  describe("across processes", () => {
    it.skipIf(single)(
      "processes and this one contend without overlap (scope host/cluster)",
      async () => {
        const h = new Harness(options);
        const children = [new Contender(options, h.namespace), new Contender(options, h.namespace)];
        await Promise.all(children.map((c) => c.next("ready")));
        for (const c of children) c.send({ type: "contend", key: "cross", loops });
        const local = await contend(await h.clients(1), "cross", loops);
        const history = new History();
        history.add(...local.holds);
        for (const c of children) history.add(...(await c.next("holds")).holds);
        expect(history.holds).toHaveLength(3 * loops);
        history.assertValid({ fencing: capabilities.fencing });
        // close() while holding a lease (its watchdog, the backend's session or keep-alive
        // running): it must stop every timer and socket it opened, then the child exits by itself.
        children[0]!.send({ type: "hold", key: "cross-held", ttlMs: h.ttlMs });
        await children[0]!.next("acquired");
        for (const c of children) c.send({ type: "close" });
        for (const c of children) {
          const { leftOver } = await c.next("closed");
          expect(leftOver, "the child's resources left after close()").toEqual([]);
        }
        for (const c of children) expect(await c.exited, "child exit code after close()").toBe(0);
      },
    );

    it.skipIf(single)(
      "a killed holder's key frees (after its TTL, or at once); with fencing, tokens keep increasing across the crash (scope host/cluster)",
      async () => {
        const h = new Harness(options);
        const child = new Contender(options, h.namespace);
        const locks = await h.client();
        // An earlier grant of the key, so that the crashed holder's token has one to exceed.
        const first = await locks.acquire("killed", { timeoutMs: 10_000 });
        await first.release();
        await child.next("ready");
        child.send({ type: "hold", key: "killed", ttlMs: h.ttlMs });
        const killed = BigInt((await child.next("acquired")).token);
        child.kill("SIGKILL");
        await child.exited;
        const lease = await locks.acquire("killed", { timeoutMs: h.ttlMs * 10 + 10_000 });
        if (capabilities.fencing) {
          expect(killed > first.fencingToken, `killed ${killed} after ${first.fencingToken}`).toBe(
            true,
          );
          expect(lease.fencingToken > killed, `next ${lease.fencingToken} after ${killed}`).toBe(
            true,
          );
        }
        await lease.release();
      },
    );
  });
}
