import { randomUUID } from "node:crypto";
import { onAbort } from "./abort.js";
import type { Backend, LockMode } from "./backend.js";
import { invalidArgument } from "./errors.js";
import { typeName, validateKey } from "./keys.js";
import type { Lease } from "./lease.js";
import type { Locks } from "./locks.js";
import { LocalQueues } from "./web-locks-queue.js";

/**
 * A granted Web Lock, as passed to a {@link LockGrantedCallback} (the spec's
 * `Lock`). `fencingToken` and `signal` are this library's additions.
 *
 * @group Web Locks API
 */
export interface WebLock {
  /** The name given to `request`. */
  readonly name: string;
  readonly mode: LockMode;
  /** The fencing token of the lease behind this lock (0n on a backend without fencing). */
  readonly fencingToken: bigint;
  /** Aborts once the lock is no longer held: released, stolen, or lost (TTL passed, backend gone). */
  readonly signal: AbortSignal;
}

/**
 * Runs while the lock is held: the lock, or null for an `ifAvailable` request that was not granted.
 *
 * @group Web Locks API
 */
export type LockGrantedCallback<T> = (lock: WebLock | null) => T | PromiseLike<T>;

/**
 * Options of {@link LockManager.request} (the spec's `LockOptions`).
 *
 * @group Web Locks API
 */
export interface LockManagerRequestOptions {
  /** `"exclusive"` (default) or `"shared"` (needs a backend with the `shared` capability). */
  mode?: LockMode;
  /** Grant only if grantable at once; otherwise the callback runs with null. */
  ifAvailable?: boolean;
  /**
   * Frees the lock whoever holds it (`locks.forceRelease(name)`: in this
   * process and in others) and takes it ahead of every queued request.
   * Exclusive mode only. Evicted requests reject with an `AbortError`.
   */
  steal?: boolean;
  /** Aborting it before the lock is granted rejects the request with `signal.reason`. */
  signal?: AbortSignal;
}

/**
 * One held or pending request, as listed by {@link LockManager.query}.
 *
 * @group Web Locks API
 */
export interface LockInfo {
  /** The name given to `request`. */
  name: string;
  /** The requested mode. */
  mode: LockMode;
  /** The `clientId` of the manager that made the request. */
  clientId: string;
}

/**
 * What {@link LockManager.query} returns.
 *
 * @group Web Locks API
 */
export interface LockManagerSnapshot {
  /** Granted requests whose lease is held, in the order granted. */
  held: LockInfo[];
  /** Requests waiting in a manager's queue or for their lease, in the order made. */
  pending: LockInfo[];
}

/**
 * The W3C Web Locks API (`navigator.locks`, Node 24's `worker_threads.locks`)
 * over a {@link Locks} client, so its locks hold across processes and hosts
 * as far as the backend's scope reaches. Names are keys of that client.
 *
 * @group Web Locks API
 */
export interface LockManager {
  /** A random id for this manager, the `clientId` of its requests in `query()`. */
  readonly clientId: string;
  /**
   * Waits for the lock `name`, runs `callback` with it, keeps it while the
   * promise `callback` returns is pending, releases it, and settles like that
   * promise. Rejects with an `AbortError` DOMException when the lock is
   * stolen or lost (then `cause` is the `LockLostError`) before that. Bad
   * arguments reject as in browsers (`TypeError`, `NotSupportedError`), and
   * a name the core refuses as a key with `INVALID_ARGUMENT`.
   */
  request<T>(name: string, callback: LockGrantedCallback<T>): Promise<Awaited<T>>;
  /** The same, with `mode`, `ifAvailable`, `steal` or `signal`. */
  request<T>(
    name: string,
    options: LockManagerRequestOptions,
    callback: LockGrantedCallback<T>,
  ): Promise<Awaited<T>>;
  /** The held and pending requests of every manager over this backend and namespace in this process. */
  query(): Promise<LockManagerSnapshot>;
}

/**
 * Creates a Web Locks `LockManager` over `locks`. Each held Web Lock is a
 * lease of `locks` (same keys, same namespace, watchdog included): a Web Lock
 * and `locks.acquire(name)` exclude each other.
 *
 * @group Web Locks API
 */
export function createLockManager(locks: Locks): LockManager {
  const ok =
    typeof locks === "object" &&
    locks !== null &&
    typeof locks.acquire === "function" &&
    typeof locks.tryAcquire === "function" &&
    typeof locks.forceRelease === "function";
  if (!ok) throw invalidArgument("locks", `must be a Locks client, got ${typeName(locks)}`);
  return new WebLockManager(locks);
}

/** The managers of this process per backend, for query() and for steals between managers. */
const managers = new WeakMap<Backend, Set<WeakRef<WebLockManager>>>();

/** How many times a steal frees the key and tries again before it waits like any request. */
const STEAL_ATTEMPTS = 3;

type State = "waiting" | "taking" | "held" | "ended";

/** One call of `request`, from the queue to its settlement. */
class ManagerRequest {
  state: State = "waiting";
  /** Aborted when the request is stolen while it takes its lease. */
  readonly evicted = new AbortController();
  lease: Lease | undefined;
  /** Stops listening to the user's signal or to the lease's. */
  stop: () => void = () => {};

  constructor(
    readonly name: string,
    readonly mode: LockMode,
    readonly options: Readonly<RequestOptions>,
    readonly callback: LockGrantedCallback<unknown>,
    readonly resolve: (value: unknown) => void,
    readonly reject: (reason: unknown) => void,
  ) {}
}

interface RequestOptions {
  ifAvailable: boolean;
  steal: boolean;
  signal: AbortSignal | undefined;
}

class WebLockManager implements LockManager {
  readonly clientId = randomUUID();
  readonly #locks: Locks;
  readonly #queues = new LocalQueues<ManagerRequest>();
  readonly #peers: Set<WeakRef<WebLockManager>>;

  constructor(locks: Locks) {
    this.#locks = locks;
    let peers = managers.get(locks.backend);
    if (peers === undefined) {
      peers = new Set();
      managers.set(locks.backend, peers);
    }
    for (const ref of peers) if (ref.deref() === undefined) peers.delete(ref);
    peers.add(new WeakRef(this));
    this.#peers = peers;
  }

  request<T>(name: string, ...rest: unknown[]): Promise<Awaited<T>> {
    return new Promise((resolve, reject) => {
      const [options, callback] = rest.length >= 2 ? rest : [undefined, rest[0]];
      const request = this.#parse(name, options, callback, resolve as (v: unknown) => void, reject);
      this.#enqueue(request);
    });
  }

  async query(): Promise<LockManagerSnapshot> {
    const held: LockInfo[] = [];
    const pending: LockInfo[] = [];
    for (const manager of this.#sameNamespace()) {
      const info = (r: ManagerRequest): LockInfo => ({
        name: r.name,
        mode: r.mode,
        clientId: manager.clientId,
      });
      const granted = manager.#queues.granted();
      held.push(...granted.filter((r) => r.state === "held").map(info));
      pending.push(...granted.filter((r) => r.state === "taking").map(info));
      pending.push(...manager.#queues.waiting().map(info));
    }
    return { held, pending };
  }

  /** The spec's checks, in its order, then the core's key check; throws before anything is queued. */
  #parse(
    rawName: unknown,
    rawOptions: unknown,
    callback: unknown,
    resolve: (value: unknown) => void,
    reject: (reason: unknown) => void,
  ): ManagerRequest {
    if (typeof callback !== "function") {
      throw new TypeError(`callback must be a function, got ${typeName(callback)}`);
    }
    if (typeof rawName === "symbol") throw new TypeError("name must be a string, got symbol");
    const name = String(rawName);
    const { mode, ...options } = webIdlOptions(rawOptions);
    if (name.startsWith("-")) throw notSupported('names starting with "-" are reserved');
    if (options.steal && options.ifAvailable) {
      throw notSupported("steal and ifAvailable cannot be used together");
    }
    if (options.steal && mode !== "exclusive") throw notSupported("only exclusive locks can steal");
    if (options.signal !== undefined && (options.steal || options.ifAvailable)) {
      throw notSupported("signal cannot be used with steal or ifAvailable");
    }
    validateKey(name, "name");
    const { backend } = this.#locks;
    if (options.steal && typeof backend.forceRelease !== "function") {
      // Refused before anything is evicted here.
      throw invalidArgument("steal", `needs forceRelease, which the ${backend.name} backend lacks`);
    }
    options.signal?.throwIfAborted();
    return new ManagerRequest(
      name,
      mode,
      options,
      callback as LockGrantedCallback<unknown>,
      resolve,
      reject,
    );
  }

  #enqueue(request: ManagerRequest): void {
    const { name, options } = request;
    if (options.steal) {
      for (const manager of this.#sameNamespace()) manager.#evict(name);
    } else if (options.ifAvailable && !this.#queues.grantable(request)) {
      request.state = "ended";
      // The spec runs the callback in a later task, never inside request().
      queueMicrotask(() => void this.#run(request, null));
      return;
    }
    this.#queues.enqueue(request, options.steal);
    const { signal } = options;
    if (signal !== undefined) request.stop = onAbort(signal, (r) => this.#abortWaiting(request, r));
    this.#process(name);
  }

  #process(name: string): void {
    for (const request of this.#queues.grantNext(name)) void this.#grant(request);
  }

  /** Granted in this manager: takes the lease (the backend's exclusion), then runs the callback. */
  async #grant(request: ManagerRequest): Promise<void> {
    request.state = "taking";
    let lease: Lease | null;
    try {
      lease = await this.#take(request);
    } catch (error) {
      // Stolen meanwhile: already rejected. Otherwise the signal's reason or the core's error.
      if (this.#end(request)) request.reject(error);
      return;
    }
    if (request.state !== "taking") {
      await lease?.release().catch(() => undefined);
      return;
    }
    if (lease === null) {
      // ifAvailable: free here, held by another manager or process.
      this.#end(request);
      await this.#run(request, null);
      return;
    }
    request.stop();
    request.state = "held";
    request.lease = lease;
    request.stop = onAbort(lease.signal, (reason) => this.#lost(request, reason));
    const { name, mode } = request;
    const lock: WebLock = { name, mode, fencingToken: lease.fencingToken, signal: lease.signal };
    await this.#run(request, lock);
  }

  #take(request: ManagerRequest): Promise<Lease | null> {
    const { name, mode, options } = request;
    const signal =
      options.signal === undefined
        ? request.evicted.signal
        : AbortSignal.any([request.evicted.signal, options.signal]);
    if (options.steal) {
      // Other managers' queues wait for the steal, as the spec puts it ahead of every queued request.
      return this.#steal(name, signal).finally(() => {
        for (const manager of this.#sameNamespace()) if (manager !== this) manager.#process(name);
      });
    }
    if (options.ifAvailable) return this.#locks.tryAcquire(name, { mode, signal });
    return this.#locks.acquire(name, { mode, signal });
  }

  /** Frees the key in every process, then takes it before the woken waiters can (a few tries). */
  async #steal(name: string, signal: AbortSignal): Promise<Lease> {
    for (let attempt = 0; attempt < STEAL_ATTEMPTS; attempt++) {
      await this.#locks.forceRelease(name);
      signal.throwIfAborted();
      const lease = await this.#locks.tryAcquire(name, { signal });
      if (lease !== null) return lease;
    }
    return this.#locks.acquire(name, { signal });
  }

  /** Runs the callback; with a lease, keeps it until the callback's promise settles, then releases it. */
  async #run(request: ManagerRequest, lock: WebLock | null): Promise<void> {
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
    try {
      outcome = { ok: true, value: await request.callback(lock) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    if (lock !== null) {
      // Stolen or lost meanwhile: the request has already rejected.
      if (request.state !== "held") return;
      request.stop();
      await request.lease?.release().catch(() => undefined);
      this.#end(request);
    }
    if (outcome.ok) request.resolve(outcome.value);
    else request.reject(outcome.error);
  }

  /** The user's signal aborted: a waiting request leaves the queue (a taking one is aborted by its acquire). */
  #abortWaiting(request: ManagerRequest, reason: unknown): void {
    if (!this.#queues.withdraw(request)) return;
    request.state = "ended";
    request.reject(reason);
    this.#process(request.name);
  }

  /** The lease was lost (TTL, backend gone, forced release elsewhere) while the callback ran. */
  #lost(request: ManagerRequest, reason: unknown): void {
    if (!this.#end(request)) return;
    request.reject(abortError(`lock "${request.name}" was lost`, reason));
  }

  /**
   * A steal: every request granted under `name` is released and rejects with
   * an AbortError. The queue moves on once the steal has its lease.
   */
  #evict(name: string): void {
    for (const request of this.#queues.grantedOf(name)) {
      const { lease } = request;
      this.#end(request, false);
      request.evicted.abort(abortError(`lock "${name}" was stolen`));
      void lease?.release().catch(() => undefined);
      request.reject(abortError(`lock "${name}" was stolen`));
    }
  }

  /** Ends a granted request once; true the first time. */
  #end(request: ManagerRequest, process = true): boolean {
    if (request.state === "ended") return false;
    request.state = "ended";
    request.stop();
    this.#queues.release(request);
    if (process) this.#process(request.name);
    return true;
  }

  /** The live managers over this client's backend and namespace (this one included). */
  *#sameNamespace(): Generator<WebLockManager> {
    for (const ref of this.#peers) {
      const manager = ref.deref();
      if (manager === undefined) this.#peers.delete(ref);
      else if (manager.#locks.namespace === this.#locks.namespace) yield manager;
    }
  }
}

/** The options dictionary as WebIDL converts it: TypeError for a wrong type, unknown keys ignored. */
function webIdlOptions(options: unknown): RequestOptions & { mode: LockMode } {
  if (options !== undefined && options !== null && typeof options !== "object") {
    throw new TypeError(`options must be an object, got ${typeName(options)}`);
  }
  const o = (options ?? {}) as Record<string, unknown>;
  const mode = o.mode === undefined ? "exclusive" : String(o.mode);
  if (mode !== "exclusive" && mode !== "shared") {
    throw new TypeError(`options.mode must be "exclusive" or "shared", got "${mode}"`);
  }
  const { signal } = o;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(`options.signal must be an AbortSignal, got ${typeName(signal)}`);
  }
  return { mode, ifAvailable: Boolean(o.ifAvailable), steal: Boolean(o.steal), signal };
}

function notSupported(message: string): DOMException {
  return new DOMException(message, "NotSupportedError");
}

function abortError(message: string, cause?: unknown): DOMException {
  const error = new DOMException(message, "AbortError");
  if (cause !== undefined)
    Object.defineProperty(error, "cause", { value: cause, writable: true, configurable: true });
  return error;
}
