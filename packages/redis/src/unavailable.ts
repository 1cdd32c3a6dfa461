import { LockError, socketErrorWords } from "@locks/core/backend";

/** ioredis' own messages (its option names mean nothing to the reader of a lock error). */
const CLIENT_MESSAGES: ReadonlyArray<[RegExp, string]> = [
  [/^Stream isn't writeable/, "not connected"],
  [/^Connection is closed/, "connection closed"],
  [/^Cluster isn't ready/, "not connected to the cluster"],
  [/^None of startup nodes is available/, "no cluster node reachable"],
  [/^Failed to refresh slots cache/, "could not read the cluster's slots"],
  [/^Reached the max retries per request limit/, "not connected"],
];

/**
 * What went wrong, in plain words: "connection refused", "no reply within
 * 100 ms", "the server replied: NOPERM ...". Never ioredis internals such as
 * "Stream isn't writeable and enableOfflineQueue options is false".
 */
export function plainCause(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const words = typeof code === "string" ? socketErrorWords(code) : undefined;
  if (words !== undefined) return words;
  if (error.name === "ReplyError") return `the server replied: ${error.message}`;
  for (const [pattern, words] of CLIENT_MESSAGES) if (pattern.test(error.message)) return words;
  if (error.name === "AggregateError" && "errors" in error) {
    const first = (error as AggregateError).errors[0];
    if (first !== undefined) return plainCause(first);
  }
  return error.message;
}

/**
 * BACKEND_UNAVAILABLE naming the server tried and the plain cause; the raw
 * error (ioredis' or the socket's) stays in `cause`.
 */
export function unavailable(server: string, cause: unknown): LockError {
  return new LockError(
    "BACKEND_UNAVAILABLE",
    `redis backend unavailable: ${server}: ${plainCause(cause)}`,
    { cause },
  );
}
