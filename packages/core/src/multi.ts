import { monotonicNow } from "./clock.js";
import { invalidArgument } from "./errors.js";
import { typeName, validateKey } from "./keys.js";
import type { Lease } from "./lease.js";
import type { AcquireOptions } from "./options.js";

/**
 * Several keys held together (`Locks.acquireAll`): all of them, or none.
 *
 * @group Several keys
 * @sortStrategy source-order
 */
export interface MultiLease extends AsyncDisposable {
  /** One lease per key, in the order the keys were given. */
  readonly leases: readonly Lease[];
  /** Aborts when any of the leases is lost or released; its reason is that lease's. */
  readonly signal: AbortSignal;
  /** Releases every lease; idempotent. */
  release(): Promise<void>;
}

/**
 * Options of `Locks.acquireAll`: those of `acquire` but `minHoldMs`.
 *
 * @group Several keys
 */
export type AcquireAllOptions = Omit<AcquireOptions, "minHoldMs">;

/** The keys of an `acquireAll`, validated before any I/O: a non-empty array of distinct keys. */
export function validateKeySet(keys: unknown): readonly string[] {
  if (!Array.isArray(keys))
    throw invalidArgument("keys", `must be an array, got ${typeName(keys)}`);
  if (keys.length === 0) throw invalidArgument("keys", "must not be empty");
  const seen = new Set<string>();
  keys.forEach((key, i) => {
    validateKey(key, `keys[${i}]`);
    // Locks are not reentrant: the second of two equal keys would wait for the first forever.
    if (seen.has(key))
      throw invalidArgument(`keys[${i}]`, `repeats the key ${JSON.stringify(key)}`);
    seen.add(key);
  });
  return keys;
}

/**
 * Takes every key in one canonical order (code-unit order, the same in every
 * process), so two callers whose sets overlap never wait for each other in a
 * cycle. Within one deadline for the whole set; on any failure the leases
 * already taken are released and the error is the caller's.
 */
export async function acquireInOrder(
  keys: readonly string[],
  options: AcquireAllOptions | undefined,
  acquire: (key: string, options: AcquireOptions) => Promise<Lease>,
): Promise<MultiLease> {
  const timeoutMs = options?.timeoutMs ?? Number.POSITIVE_INFINITY;
  const deadline = monotonicNow() + (typeof timeoutMs === "number" ? timeoutMs : 0);
  const canonical = [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const taken = new Map<string, Lease>();
  try {
    for (const key of canonical) {
      const left = Math.max(0, deadline - monotonicNow());
      // The first acquire validates the options (timeoutMs as given) before any I/O.
      const remaining = taken.size === 0 ? options?.timeoutMs : left;
      taken.set(key, await acquire(key, { ...options, timeoutMs: remaining }));
    }
  } catch (error) {
    await Promise.allSettled([...taken.values()].map((lease) => lease.release()));
    throw error;
  }
  return new LeaseSet(keys.map((key) => taken.get(key)!));
}

class LeaseSet implements MultiLease {
  readonly leases: readonly Lease[];
  readonly #controller = new AbortController();
  #released: Promise<void> | undefined;

  constructor(leases: readonly Lease[]) {
    this.leases = leases;
    for (const lease of leases) {
      const abort = (): void => this.#controller.abort(lease.signal.reason);
      if (lease.signal.aborted) abort();
      else lease.signal.addEventListener("abort", abort, { once: true });
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  release(): Promise<void> {
    this.#released ??= Promise.all(this.leases.map((lease) => lease.release())).then(
      () => undefined,
    );
    return this.#released;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
