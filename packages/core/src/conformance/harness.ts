import { randomBytes } from "node:crypto";
import { onTestFinished } from "vitest";
import type { Attempt, Backend, LockRequest } from "../backend.js";
import type { Lease } from "../lease.js";
import { createLocks, type Locks, type LocksOptions } from "../locks.js";
import { createRequest, type RequestFields } from "../request.js";
import { History } from "./history.js";
import type { ConformanceOptions } from "./options.js";

/** Counts the calls a backend receives, to prove bad input is refused before any I/O. */
export interface CountedBackend {
  readonly backend: Backend;
  readonly calls: () => number;
}

/**
 * Per-test fixture: a fresh random namespace (tests share servers and never
 * wipe them), backend instances made by the user's factory, and clean-up of
 * everything opened when the test ends, whether it passed or not.
 */
export class Harness {
  readonly namespace = `conf-${randomBytes(6).toString("hex")}`;
  readonly options: ConformanceOptions;
  readonly ttlMs: number;
  readonly #clients: Locks[] = [];
  readonly #backends: Backend[] = [];

  constructor(options: ConformanceOptions) {
    this.options = options;
    this.ttlMs = options.ttlMs ?? 1_000;
    onTestFinished(() => this.cleanup());
  }

  /** A lock client over a NEW backend instance (its own connections). */
  async client(options: LocksOptions = {}): Promise<Locks> {
    const backend = await this.options.create();
    const locks = createLocks(backend, { namespace: this.namespace, ...options });
    this.#clients.push(locks);
    return locks;
  }

  /** `n` clients, each over its own backend instance. */
  async clients(n: number, options: LocksOptions = {}): Promise<Locks[]> {
    const made: Locks[] = [];
    for (let i = 0; i < n; i++) made.push(await this.client(options));
    return made;
  }

  /** A client whose backend counts every call made to it. */
  async countedClient(options: LocksOptions = {}): Promise<{ locks: Locks; calls: () => number }> {
    const counted = countCalls(await this.options.create());
    const locks = createLocks(counted.backend, { namespace: this.namespace, ...options });
    this.#clients.push(locks);
    return { locks, calls: counted.calls };
  }

  /** A backend that counts every call made to it, closed with the test; for `createLocks` itself. */
  async countedBackend(): Promise<CountedBackend> {
    const counted = countCalls(await this.options.create());
    this.#backends.push(counted.backend);
    return counted;
  }

  /**
   * A client whose every `tryAcquire` reaches the store at once but whose
   * reply comes back `delayMs` later (a slow store, or 0 for none). `onAnswer`
   * sees each answer the moment the store gave it, while the reply is in flight.
   */
  async slowClient(
    delayMs: number,
    onAnswer: (attempt: Attempt) => void,
    options: LocksOptions = {},
  ): Promise<Locks> {
    const backend = await this.options.create();
    const slow = intercept(backend, (property, method) => {
      if (property !== "tryAcquire") return method;
      const slowTry = async (request: LockRequest): Promise<Attempt> => {
        const attempt = await backend.tryAcquire(request);
        onAnswer(attempt);
        if (delayMs > 0) await sleep(delayMs);
        return attempt;
      };
      return slowTry as Method;
    });
    const locks = createLocks(slow, { namespace: this.namespace, ...options });
    this.#clients.push(locks);
    return locks;
  }

  /** A client that reports every grant its backend hands out, from `tryAcquire` and `acquire` alike. */
  async grantWatchedClient(onGrant: () => void): Promise<Locks> {
    const backend = await this.options.create();
    const watched = intercept(backend, (property, method) => {
      if (property !== "tryAcquire" && property !== "acquire") return method;
      return (async (...args: unknown[]) => {
        const attempt = (await method(...args)) as Attempt | undefined;
        if (attempt?.granted === true) onGrant();
        return attempt;
      }) as Method;
    });
    const locks = createLocks(watched, { namespace: this.namespace });
    this.#clients.push(locks);
    return locks;
  }

  /** A request for the backend contract itself, as the core would build it. */
  request(key: string, fields: Omit<RequestFields, "key"> = {}): LockRequest {
    return createRequest({ key, namespace: this.namespace, ttlMs: this.ttlMs, ...fields });
  }

  async cleanup(): Promise<void> {
    await Promise.allSettled([
      ...this.#clients.map((c) => c.close()),
      ...this.#backends.map((b) => b.close()),
    ]);
  }
}

function countCalls(backend: Backend): CountedBackend {
  let calls = 0;
  const counted = intercept(backend, (property, method) => {
    // Neither touches the store: `bind` is how createLocks introduces itself.
    if (property === "close" || property === "bind") return method;
    return (...args: unknown[]) => {
      calls++;
      return method(...args);
    };
  });
  return { backend: counted, calls: () => calls };
}

type Method = (...args: unknown[]) => unknown;

/**
 * A stand-in for `backend` whose methods are `wrap(name, method)`, each
 * `method` bound to the real backend (class backends with #private fields
 * reject any other `this`). The proxy's target is an empty object inheriting
 * from the backend, so that a backend's read-only, non-configurable method
 * (defined with Object.defineProperty) can be replaced without breaking a
 * Proxy invariant.
 */
function intercept(
  backend: Backend,
  wrap: (property: string | symbol, method: Method) => Method,
): Backend {
  return new Proxy(Object.create(backend) as Backend, {
    get(_target, property) {
      const value: unknown = Reflect.get(backend, property);
      if (typeof value !== "function") return value;
      return wrap(property, (value as Method).bind(backend));
    },
  });
}

/** Resolves after `ms`; used only to hold a lock for a while, never to wait for a condition. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Each of `clients` runs `loops` acquire -> hold -> release cycles on `key`,
 * recording every hold; returns the history for checking.
 */
export async function contend(
  clients: readonly Locks[],
  key: string,
  loops: number,
  options: {
    tasksPerClient?: number;
    limit?: number;
    mode?: "exclusive" | "shared" | "mixed";
  } = {},
): Promise<History> {
  const history = new History();
  const tasks: Promise<void>[] = [];
  const perClient = options.tasksPerClient ?? 1;
  const limit = options.limit ?? 1;
  clients.forEach((locks, c) => {
    for (let t = 0; t < perClient; t++) {
      tasks.push(
        (async () => {
          for (let i = 0; i < loops; i++) {
            const mode =
              options.mode === "mixed"
                ? i % 3 === 0
                  ? "exclusive"
                  : "shared"
                : (options.mode ?? "exclusive");
            const lease: Lease = await locks.acquire(key, {
              timeoutMs: 60_000,
              ...(limit > 1 ? { limit } : {}),
              ...(mode === "shared" ? { mode } : {}),
            });
            const end = history.begin(lease, `client${c}-task${t}`, limit);
            // Hold across a real turn of the event loop, so that overlaps can show.
            await new Promise((resolve) => setImmediate(resolve));
            if (i % 4 === 0) await sleep(1);
            end();
            await lease.release();
          }
        })(),
      );
    }
  });
  await Promise.all(tasks);
  return history;
}

/**
 * Now, in epoch ms, for comparing with `Lease.expiresAt`: the later of the
 * wall clock and the monotonic clock's epoch view, so that the two clocks
 * drifting apart can only loosen a bound, never fail an honest backend.
 */
export function wallNow(): number {
  return Math.max(Date.now(), performance.timeOrigin + performance.now());
}

/**
 * Makes each client take and release a key of its own, so that connecting,
 * loading scripts and opening sessions are done before a test that times the
 * order of waiters: a waiter's first use of a client must not delay it.
 */
export async function warmUp(clients: readonly Locks[]): Promise<void> {
  await Promise.all(
    clients.map(async (locks, i) => {
      const lease = await locks.acquire(`warm-up-${i}`, { timeoutMs: 60_000 });
      await lease.release();
    }),
  );
}

/** The code of a rejection, or "resolved". */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    return typeof code === "string" ? code : `non-LockError: ${String(error)}`;
  }
}
