import { isLockError, LockError, socketErrorWords } from "@locks/core/backend";

/**
 * A BACKEND_UNAVAILABLE error that names the endpoints it tried and the plain
 * cause ("connection refused"), not gRPC's text; the raw error stays in
 * `cause`. Lock errors pass through unchanged.
 */
export function unavailable(error: unknown, endpoints: readonly string[]): LockError {
  if (isLockError(error)) return error;
  const where = endpoints.length > 0 ? ` (tried ${endpoints.join(", ")})` : "";
  return new LockError(
    "BACKEND_UNAVAILABLE",
    `etcd backend unavailable${where}: ${plainCause(error)}`,
    {
      cause: error,
    },
  );
}

/** The cause of a gRPC or etcd error in a few plain words. */
function plainCause(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const socket = /\b(E[A-Z_]{3,})\b/.exec(
    /Last error: (.*?)(?:\. Resolution note:|$)/s.exec(message)?.[1] ?? "",
  );
  // gRPC reports the socket's error as "Last error: Error: connect ECONNREFUSED ...".
  if (socket?.[1] !== undefined) return socketErrorWords(socket[1]) ?? socket[1];
  const grpc = /^(\d+) ([A-Z_]+): ?(.*)$/s.exec(message);
  if (grpc === undefined || grpc === null) return tidy(message);
  const [, , status = "", detail = ""] = grpc;
  if (status === "DEADLINE_EXCEEDED")
    return "no reply before the request deadline (requestTimeoutMs)";
  if (status === "UNAVAILABLE") return tidy(detail) || "no connection";
  return tidy(detail) || status.toLowerCase().replaceAll("_", " ");
}

/** Drops gRPC's empty trailers ("Resolution note:") and trailing punctuation. */
function tidy(text: string): string {
  return text
    .replace(/\s*Resolution note:\s*$/s, "")
    .replace(/[.\s]+$/, "")
    .trim();
}
