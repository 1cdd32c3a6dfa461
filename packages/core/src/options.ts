import type { Capabilities, LockMode } from "./backend.js";
import { invalidArgument } from "./errors.js";
import { typeName, validateKey } from "./keys.js";

/**
 * Options of `Locks.tryAcquire`.
 *
 * @group Options
 * @sortStrategy source-order
 */
export interface TryAcquireOptions {
  /** Lease time in ms; defaults to the client's `ttlMs`. A backend without server-side TTL validates and ignores it. */
  ttlMs?: number;
  /** Extend the lease at about a third of its TTL until release (default true). */
  autoExtend?: boolean;
  /** `"exclusive"` (default) or `"shared"`. */
  mode?: LockMode;
  /** Maximum number of holders: a counting semaphore when > 1 (default 1). */
  limit?: number;
  /** Gives up when aborted: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * Minimum hold in ms (ShedLock's `lockAtLeastFor`): a release earlier than
   * this after the grant keeps the key held until grant + `minHoldMs`, so a
   * quick job is not run twice by replicas whose clocks or schedules differ.
   * With server-side TTL the lease is shortened to what remains; without it
   * (postgres) the client releases later, so a crash or `close()` frees the
   * key early. Default 0.
   */
  minHoldMs?: number;
  /**
   * A label for this holder (1 to 256 UTF-8 bytes: a host name, a replica),
   * stored with the lock and shown by `Locks.inspect` and `locks status`.
   */
  holder?: string;
}

/**
 * Options of `Locks.acquire` and `Locks.withLock`.
 *
 * @group Options
 */
export interface AcquireOptions extends TryAcquireOptions {
  /** How long to wait for the lock, in ms; rejects with `LOCK_TIMEOUT` after it. Default: wait forever. 0 tries once. */
  timeoutMs?: number;
}

/** Validated acquire options, defaults filled in. */
export interface ResolvedOptions {
  readonly ttlMs: number;
  readonly autoExtend: boolean;
  readonly mode: LockMode;
  readonly limit: number;
  readonly signal: AbortSignal | undefined;
  readonly timeoutMs: number;
  readonly minHoldMs: number;
  readonly holder: string | undefined;
}

/** setTimeout's ceiling: a longer delay fires at once, so refuse it. */
export const MAX_TIMER_MS = 2_147_483_647;

const TRY_ACQUIRE_KEYS = new Set([
  "ttlMs",
  "autoExtend",
  "mode",
  "limit",
  "signal",
  "minHoldMs",
  "holder",
]);

/** Longest holder label accepted, in UTF-8 bytes. */
const MAX_HOLDER_BYTES = 256;

/**
 * Validates a holder label: undefined, or 1 to 256 UTF-8 bytes of
 * well-formed text; `name` is what the error message calls it.
 *
 * @group Option parsing
 */
export function validateHolder(holder: unknown, name = "holder"): string | undefined {
  return holder === undefined ? undefined : validateKey(holder, name, MAX_HOLDER_BYTES);
}
const ACQUIRE_KEYS = new Set([...TRY_ACQUIRE_KEYS, "timeoutMs"]);

/**
 * The core's floor for `ttlMs`, whatever the backend declares: a lease is
 * presumed lost `driftAllowance(ttl)` (1% + 2 ms) before its TTL, so a TTL of
 * a few ms would be lost before its grant could be reported.
 *
 * @group Options
 */
export const MIN_TTL_MS = 10;

/** The shortest `ttlMs` a client over a backend with `capabilities` accepts. */
export function ttlFloor(capabilities: Capabilities): number {
  return Math.max(MIN_TTL_MS, capabilities.minTtlMs ?? 0);
}

/**
 * Validates a TTL: a finite number of ms from `floor` (the backend's, see
 * `ttlFloor`) up to setTimeout's ceiling, rounded up to whole ms.
 */
export function validateTtl(value: unknown, floor: number, name = "ttlMs"): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw invalidArgument(
      name,
      `must be a positive finite number of milliseconds, got ${show(value)}`,
    );
  }
  if (value < floor) {
    throw invalidArgument(
      name,
      `must be at least ${floor} ms, the shortest lease this backend can honour, got ${value}`,
    );
  }
  if (value > MAX_TIMER_MS)
    throw invalidArgument(name, `must be at most ${MAX_TIMER_MS}, got ${value}`);
  return Math.ceil(value);
}

/** Validates and completes acquire options before any I/O. */
const noOptions = new WeakMap<object, ResolvedOptions>();

export function resolveOptions(
  options: AcquireOptions | undefined,
  defaults: { ttlMs: number; autoExtend: boolean },
  capabilities: Capabilities,
  allowTimeout: boolean,
): ResolvedOptions {
  if (options === undefined) {
    // The same frozen object for every acquire without options (the hot path) of a client.
    let resolved = noOptions.get(defaults);
    if (resolved === undefined) {
      resolved = Object.freeze({
        ttlMs: defaults.ttlMs,
        autoExtend: defaults.autoExtend,
        mode: "exclusive",
        limit: 1,
        signal: undefined,
        timeoutMs: Number.POSITIVE_INFINITY,
        minHoldMs: 0,
        holder: undefined,
      });
      noOptions.set(defaults, resolved);
    }
    return resolved;
  }
  refuseUnknownOptions(options, allowTimeout ? ACQUIRE_KEYS : TRY_ACQUIRE_KEYS);
  const o = options as Record<string, unknown>;
  const ttlMs =
    o.ttlMs === undefined ? defaults.ttlMs : validateTtl(o.ttlMs, ttlFloor(capabilities));

  const autoExtend = o.autoExtend === undefined ? defaults.autoExtend : o.autoExtend;
  if (typeof autoExtend !== "boolean") {
    throw invalidArgument("autoExtend", `must be a boolean, got ${typeName(autoExtend)}`);
  }

  const mode = o.mode === undefined ? "exclusive" : o.mode;
  if (mode !== "exclusive" && mode !== "shared") {
    throw invalidArgument("mode", `must be "exclusive" or "shared", got ${show(mode)}`);
  }
  if (mode === "shared" && !capabilities.shared) {
    throw invalidArgument("mode", `"shared" is not supported by this backend`);
  }

  const limit = o.limit === undefined ? 1 : o.limit;
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1) {
    throw invalidArgument("limit", `must be an integer >= 1, got ${show(limit)}`);
  }
  if (limit > 1 && !capabilities.semaphore) {
    throw invalidArgument("limit", "> 1 (semaphore) is not supported by this backend");
  }
  if (limit > 1 && mode === "shared") {
    throw invalidArgument("limit", `> 1 cannot be combined with mode "shared"`);
  }

  const signal = validateSignal(o.signal);

  let timeoutMs = Number.POSITIVE_INFINITY;
  if (o.timeoutMs !== undefined) {
    const t = o.timeoutMs;
    if (typeof t !== "number" || Number.isNaN(t) || t < 0) {
      throw invalidArgument("timeoutMs", `must be a number >= 0 (or Infinity), got ${show(t)}`);
    }
    timeoutMs = t;
  }

  const minHoldMs = o.minHoldMs === undefined ? 0 : o.minHoldMs;
  if (typeof minHoldMs !== "number" || !Number.isFinite(minHoldMs) || minHoldMs < 0) {
    throw invalidArgument("minHoldMs", `must be a finite number >= 0, got ${show(minHoldMs)}`);
  }
  if (minHoldMs > MAX_TIMER_MS)
    throw invalidArgument("minHoldMs", `must be at most ${MAX_TIMER_MS}, got ${minHoldMs}`);

  const holder = validateHolder(o.holder);
  return { ttlMs, autoExtend, mode, limit, signal, timeoutMs, minHoldMs, holder };
}

/** Refuses anything but an object whose keys are all in `allowed`, naming the first unknown one. */
export function refuseUnknownOptions(options: unknown, allowed: ReadonlySet<string>): void {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", `must be an object, got ${typeName(options)}`);
  }
  for (const name in options) {
    if (!allowed.has(name)) {
      const tryOnly = name === "timeoutMs" && allowed === TRY_ACQUIRE_KEYS;
      const hint = tryOnly ? " (tryAcquire never waits; use acquire)" : "";
      throw invalidArgument(`options.${name}`, `is not a known option${hint}`);
    }
  }
}

/** Validates an optional `signal` option. */
export function validateSignal(signal: unknown): AbortSignal | undefined {
  if (signal !== undefined && !isAbortSignal(signal)) {
    throw invalidArgument("signal", `must be an AbortSignal, got ${typeName(signal)}`);
  }
  return signal;
}

function isAbortSignal(value: unknown): value is AbortSignal {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as AbortSignal).aborted === "boolean" &&
    typeof (value as AbortSignal).addEventListener === "function"
  );
}

function show(value: unknown): string {
  if (typeof value === "string")
    return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint")
    return String(value);
  return typeName(value);
}
