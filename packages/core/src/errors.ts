/**
 * Stable error codes. Check `error.code`, not `instanceof`: two copies of
 * `@locks/core` in one install make `instanceof` unreliable, codes never are.
 *
 * @group Errors
 */
export type LockErrorCode =
  | "LOCK_TIMEOUT"
  | "LOCK_LOST"
  | "INVALID_ARGUMENT"
  | "BACKEND_UNAVAILABLE"
  | "LOCK_CLOSED"
  | "LOCK_RELEASED";

/**
 * Every error the library throws. Messages may improve between versions; `code` will not change.
 *
 * @group Errors
 */
export class LockError extends Error {
  /** The stable code of this error. */
  readonly code: LockErrorCode;

  constructor(code: LockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LockError";
    this.code = code;
  }
}

/**
 * `acquire` waited `timeoutMs` without getting the lock.
 *
 * @group Errors
 */
export class LockTimeoutError extends LockError {
  constructor(message: string) {
    super("LOCK_TIMEOUT", message);
    this.name = "LockTimeoutError";
  }
}

/**
 * The holder can no longer be sure it holds the lock (TTL passed, extension refused, session lost).
 *
 * @group Errors
 */
export class LockLostError extends LockError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("LOCK_LOST", message, options);
    this.name = "LockLostError";
  }
}

/**
 * Refused before any I/O: the message names the argument.
 *
 * @group Error helpers
 */
export function invalidArgument(name: string, problem: string): LockError {
  return new LockError("INVALID_ARGUMENT", `${name} ${problem}`);
}

/**
 * For backends: a request whose `limit` differs from the one the key's current
 * holders took it with (as `consul lock -n` refuses). Two limits on one key
 * would make neither mean anything.
 *
 * @group Error helpers
 */
export function limitMismatch(requested: number, current: number): LockError {
  return invalidArgument(
    "limit",
    `${requested} differs from the limit ${current} that the key's current holders use`,
  );
}

/**
 * The server could not be reached or answered with an error; the original error is `cause`.
 *
 * @group Error helpers
 */
export function backendUnavailable(backend: string, cause: unknown): LockError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new LockError("BACKEND_UNAVAILABLE", `${backend} backend unavailable: ${detail}`, {
    cause,
  });
}

/** Node's socket error codes in the words a person debugging a connection looks for. */
const SOCKET_ERRORS: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ECONNABORTED: "connection aborted",
  EPIPE: "connection closed",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
};

/**
 * For backends' BACKEND_UNAVAILABLE messages: a socket error code
 * (`ECONNREFUSED`, ...) in plain words, or undefined for another code.
 *
 * @group Error helpers
 */
export function socketErrorWords(code: string): string | undefined {
  return SOCKET_ERRORS[code];
}

/**
 * The `Locks` (or backend) was closed.
 *
 * @group Error helpers
 */
export function lockClosed(what = "locks client"): LockError {
  return new LockError("LOCK_CLOSED", `the ${what} was closed`);
}

/**
 * True when `error` is a LockError with the given code (works across duplicate installs).
 *
 * @group Errors
 */
export function isLockError(error: unknown, code?: LockErrorCode): error is LockError {
  if (typeof error !== "object" || error === null) return false;
  const c = (error as { code?: unknown }).code;
  if (typeof c !== "string" || !LOCK_ERROR_CODES.has(c)) return false;
  return code === undefined || c === code;
}

const LOCK_ERROR_CODES: ReadonlySet<string> = new Set<LockErrorCode>([
  "LOCK_TIMEOUT",
  "LOCK_LOST",
  "INVALID_ARGUMENT",
  "BACKEND_UNAVAILABLE",
  "LOCK_CLOSED",
  "LOCK_RELEASED",
]);
