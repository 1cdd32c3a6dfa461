import type {
  Attempt,
  Backend,
  Grant,
  KeyEvent,
  KeyRef,
  KeyStatus,
  LockRequest,
  Unsubscribe,
  WaitOptions,
} from "./backend.js";
import { backendUnavailable, invalidArgument, isLockError, lockClosed } from "./errors.js";

/**
 * Every call the core makes into a backend goes through here, so the
 * promises `Backend` documents are kept in one place: errors that are not
 * `LockError`s become BACKEND_UNAVAILABLE, calls in flight are counted so
 * close() can wait for them, and nothing is called once the backend is closed.
 */
export class BackendCalls<Hold = unknown> {
  readonly backend: Backend<Hold>;
  #pending = 0;
  #idle: (() => void) | undefined;
  #closed = false;

  constructor(backend: Backend<Hold>) {
    this.backend = backend;
  }

  tryAcquire(request: LockRequest): Promise<Attempt<Hold>> {
    return this.#call(() => this.backend.tryAcquire(request));
  }

  /** The store's own queue; undefined when the backend has none or declines. */
  acquire(request: LockRequest, wait: WaitOptions): Promise<Grant<Hold> | undefined> {
    const acquire = this.backend.acquire;
    if (acquire === undefined) return Promise.resolve(undefined);
    return this.#call(() => acquire.call(this.backend, request, wait));
  }

  extend(request: LockRequest, hold: Hold, ttlMs: number): Promise<boolean> {
    return this.#call(() => this.backend.extend(request, hold, ttlMs));
  }

  release(request: LockRequest, hold: Hold | undefined): Promise<void> {
    return this.#call(() => this.backend.release(request, hold));
  }

  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe | undefined> {
    const subscribe = this.backend.subscribe;
    if (subscribe === undefined) return Promise.resolve(undefined);
    return this.#call(async () => {
      const unsubscribe = await subscribe.call(this.backend, key, onChange);
      // A call like any other: counted for close(), never made after it.
      return () => this.#call(async () => unsubscribe());
    });
  }

  inspect(key: KeyRef): Promise<KeyStatus> {
    const inspect = this.backend.inspect;
    if (inspect === undefined) return Promise.reject(this.#lacks("inspect"));
    return this.#call(() => inspect.call(this.backend, key));
  }

  forceRelease(key: KeyRef): Promise<boolean> {
    const forceRelease = this.backend.forceRelease;
    if (forceRelease === undefined) return Promise.reject(this.#lacks("forceRelease"));
    return this.#call(() => forceRelease.call(this.backend, key));
  }

  /** Resolves once no call is in flight. */
  idle(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const before = this.#idle;
      this.#idle = () => {
        before?.();
        resolve();
      };
    });
  }

  /**
   * Every later call rejects with LOCK_CLOSED without reaching the backend;
   * `closeBackend` (the last client of a shared backend) closes it too.
   */
  async close(closeBackend: boolean): Promise<void> {
    this.#closed = true;
    if (!closeBackend) return;
    try {
      await this.backend.close();
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  #call<T>(call: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(lockClosed());
    this.#pending++;
    let pending: Promise<T>;
    try {
      pending = call();
    } catch (error) {
      this.#settled();
      return Promise.reject(this.#unavailable(error));
    }
    // One `then` for both outcomes, with handlers made once: this runs twice per lock cycle.
    return pending.then(this.#fulfilled as (value: T) => T, this.#rejected);
  }

  readonly #fulfilled = <T>(value: T): T => {
    this.#settled();
    return value;
  };

  readonly #rejected = (error: unknown): never => {
    this.#settled();
    throw this.#unavailable(error);
  };

  #settled(): void {
    if (--this.#pending > 0) return;
    const idle = this.#idle;
    this.#idle = undefined;
    idle?.();
  }

  /** An optional part of the contract this backend does not have: refused before any I/O. */
  #lacks(method: string): unknown {
    if (this.#closed) return lockClosed();
    return invalidArgument(method, `is not supported by the ${this.backend.name} backend`);
  }

  #unavailable(error: unknown): unknown {
    return isLockError(error) ? error : backendUnavailable(this.backend.name, error);
  }
}
