/*
 * Entry point of a LockChild (child.ts): builds the backend the parent names,
 * a client over it, then obeys the parent's commands over IPC, one reply
 * each. testkit does not depend on @locks/core: the child loads the core the
 * backend's own module resolves, so both share one copy.
 */
import { appendFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import type {
  ChildAcquireOptions,
  ChildContext,
  ChildExtension,
  ChildHoldRecord,
  ChildLease,
  ChildMessage,
  ChildRequest,
  ChildSetup,
  ContendOptions,
} from "./child.js";

/** The parts of @locks/core used here. */
interface Lease {
  readonly key: string;
  readonly mode: "exclusive" | "shared";
  readonly fencingToken: bigint;
  readonly signal: AbortSignal;
  readonly expiresAt: number | undefined;
  extend(ttlMs?: number): Promise<void>;
  release(): Promise<void>;
}
interface Locks {
  acquire(key: string, options?: object): Promise<Lease>;
  tryAcquire(key: string, options?: object): Promise<Lease | null>;
  close(): Promise<void>;
}
interface Core {
  createLocks(backend: object, options: object): Locks;
}
interface HistoryModule {
  historyNow(): number;
  History: new () => {
    readonly holds: ChildHoldRecord[];
    begin(lease: Lease, owner: string, limit?: number): () => void;
  };
}

const offset = Number(process.env.LOCKS_CLOCK_OFFSET_MS ?? "0");
if (offset !== 0) {
  const realNow = Date.now.bind(Date);
  Date.now = () => realNow() + offset;
}

type Command = (args: never) => unknown;
const commands = new Map<string, Command>();
const leases = new Map<number, Lease>();
/** Leases the parent asked to release: their abort is no loss. */
const releasing = new WeakSet<Lease>();
const extensions: ChildExtension[] = [];
let nextLease = 1;
let leaving = false;

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (process.send === undefined || !process.connected) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function start(request: Extract<ChildRequest, { type: "start" }>): Promise<number> {
  const require = createRequire(request.backend.module);
  const load = <T>(specifier: string): Promise<T> =>
    import(pathToFileURL(require.resolve(specifier)).href) as Promise<T>;
  const [core, history, backendModule] = await Promise.all([
    load<Core>("@locks/core"),
    load<HistoryModule>("@locks/core/history"),
    import(pathToFileURL(request.backend.module).href) as Promise<Record<string, unknown>>,
  ]);
  const make = backendModule[request.backend.export];
  if (typeof make !== "function") {
    throw new Error(`${request.backend.module} exports no function "${request.backend.export}"`);
  }
  const backend = (await make(request.backend.options)) as object;
  // Records every extend() the core makes, so the parent can tell what happened around a pause.
  const recorded = new Proxy(backend, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== "function") return value;
      if (property !== "extend") return value.bind(target);
      return async (...args: unknown[]) => {
        try {
          const ok = (await value.apply(target, args)) as boolean;
          extensions.push({ at: history.historyNow(), ok });
          return ok;
        } catch (error) {
          extensions.push({ at: history.historyNow(), ok: false });
          throw error;
        }
      };
    },
  });
  const locks = core.createLocks(recorded, { ...request.locks, namespace: request.namespace });
  defineCommands(locks, history);
  if (request.setup !== undefined) {
    const setup = (await import(pathToFileURL(request.setup).href)) as { default: ChildSetup };
    const context: ChildContext = {
      backend,
      command: (name, run) => commands.set(name, run as Command),
      emit: (event) => send({ type: "event", event }),
    };
    await setup.default(context);
  }
  return process.pid;
}

function defineCommands(locks: Locks, history: HistoryModule): void {
  const keep = (lease: Lease): ChildLease => {
    const id = nextLease++;
    leases.set(id, lease);
    lease.signal.addEventListener("abort", () => {
      leases.delete(id);
      if (releasing.has(lease) || leaving) return;
      const code = (lease.signal.reason as { code?: string } | undefined)?.code ?? "?";
      const lost = { type: "lost", lease: id, key: lease.key, code, at: history.historyNow() };
      void send({ type: "event", event: { ...lost, extensions: [...extensions] } });
    });
    return { id, key: lease.key, token: lease.fencingToken, at: history.historyNow() };
  };
  const lease = (id: number): Lease => {
    const found = leases.get(id);
    if (found === undefined) throw new Error(`no lease ${id} held`);
    return found;
  };
  type KeyArgs = { key: string; options: ChildAcquireOptions };
  commands.set("acquire", (async ({ key, options }: KeyArgs) =>
    keep(await locks.acquire(key, options))) as Command);
  commands.set("tryAcquire", (async ({ key, options }: KeyArgs) => {
    const got = await locks.tryAcquire(key, options);
    return got === null ? null : keep(got);
  }) as Command);
  commands.set("release", (async (args: { lease?: number }) => {
    const chosen = args.lease === undefined ? [...leases.values()] : [lease(args.lease)];
    for (const l of chosen) releasing.add(l);
    await Promise.all(chosen.map((l) => l.release()));
  }) as Command);
  commands.set("extend", (async (args: { lease: number; ttlMs?: number }) => {
    const held = lease(args.lease);
    await held.extend(args.ttlMs);
    return held.expiresAt;
  }) as Command);
  commands.set("contend", ((args: ContendOptions & { key: string }) =>
    contend(locks, history, args)) as Command);
  commands.set("block", ((args: { ms: number }) => {
    const until = performance.now() + args.ms;
    while (performance.now() < until) {
      // busy: no timer, no socket read runs
    }
    return history.historyNow();
  }) as Command);
  commands.set("exit", ((args: { code: number }) => process.exit(args.code)) as Command);
  commands.set("crash", (() => process.kill(process.pid, "SIGKILL")) as Command);
  commands.set("close", (async () => {
    leaving = true;
    await locks.close();
    // Then the child must exit by itself: no handle of the backend may be left.
    setImmediate(() => process.disconnect?.());
  }) as Command);
}

async function contend(
  locks: Locks,
  history: HistoryModule,
  args: ContendOptions & { key: string },
): Promise<ChildHoldRecord[]> {
  const record = new history.History();
  const holdMs = args.holdMs ?? [0];
  await Promise.all(
    Array.from({ length: args.tasks ?? 1 }, async (_, task) => {
      for (let i = 0; i < args.loops; i++) {
        const options =
          args.limit !== undefined
            ? { limit: args.limit }
            : args.mode === "shared" || (args.mode === "mixed" && i % 3 !== 0)
              ? { mode: "shared" }
              : {};
        const lease = await locks.acquire(args.key, { timeoutMs: args.timeoutMs, ...options });
        const owner = `pid${process.pid}-task${task}`;
        const end = record.begin(lease, owner, args.limit ?? 1);
        const line = `${process.pid} ${i} ${lease.fencingToken}\n`;
        if (args.log !== undefined) await appendFile(args.log, line.slice(0, 4));
        await turn();
        if (args.log !== undefined) await appendFile(args.log, line.slice(4));
        const ms = holdMs[i % holdMs.length] ?? 0;
        if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
        end();
        await lease.release();
      }
    }),
  );
  return record.holds;
}

async function run(request: ChildRequest): Promise<void> {
  const id = request.type === "start" ? 0 : request.id;
  try {
    if (request.type === "start") {
      await send({ type: "ready", pid: await start(request) });
      return;
    }
    const command = commands.get(request.name);
    if (command === undefined) throw new Error(`unknown command "${request.name}"`);
    const value = await command(request.args as never);
    await send({ type: "reply", id, value });
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    await send({
      type: "failed",
      id,
      message: `${request.type === "start" ? "start" : request.name}: ${String(error)}`,
      code: typeof code === "string" ? code : "",
    });
  }
}

process.on("message", (request: ChildRequest) => void run(request));
// A parent gone without ending this child (itself killed): do not outlive it.
process.on("disconnect", () => {
  if (!leaving) process.exit(70);
});
