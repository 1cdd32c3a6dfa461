import { request } from "node:http";
import { connect, type Socket } from "node:net";

/**
 * Where to connect: host and port, a Unix socket path, or a URL
 * (redis://, postgresql://, http://) whose host and port are used.
 */
export type Target = string | { host: string; port: number } | { path: string };

function connectTo(target: Target): Socket {
  if (typeof target === "string") {
    const url = new URL(target);
    return connect({ host: url.hostname || "127.0.0.1", port: Number(url.port) });
  }
  return "path" in target
    ? connect({ path: target.path })
    : connect({ host: target.host, port: target.port });
}

/**
 * Opens a socket, lets `onData` consume the accumulated bytes until it
 * returns a result, then closes the socket. Rejects on error, early close or
 * timeout (a paused server is a timeout).
 */
function converse<T>(
  target: Target,
  timeoutMs: number,
  first: Buffer,
  onData: (buffer: Buffer, socket: Socket) => { done: true; value: T } | undefined,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = connectTo(target);
    let buffer: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (error: Error | undefined, value?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value as T);
    };
    const timer = setTimeout(() => finish(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
    socket.once("error", (error) => finish(error));
    socket.once("close", () => finish(new Error("connection closed before the reply")));
    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      try {
        const result = onData(buffer, socket);
        if (result) finish(undefined, result.value);
      } catch (error) {
        finish(error as Error);
      }
    });
    socket.write(first);
  });
}

/** A RESP2 reply. Error replies reject with {@link RedisReplyError}. */
export type RespValue = string | number | null | RespValue[];

/** An error reply from Redis (`-ERR ...`, `-LOADING ...`). */
export class RedisReplyError extends Error {
  override readonly name = "RedisReplyError";
}

type Parsed = { value: RespValue | RedisReplyError; end: number } | undefined;

function parseResp(buffer: Buffer, start: number): Parsed {
  const lineEnd = buffer.indexOf("\r\n", start);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buffer[start]!);
  const line = buffer.toString("utf8", start + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case "+":
      return { value: line, end: next };
    case "-":
      return { value: new RedisReplyError(line), end: next };
    case ":":
      return { value: Number(line), end: next };
    case "$": {
      const length = Number(line);
      if (length < 0) return { value: null, end: next };
      if (buffer.length < next + length + 2) return undefined;
      return { value: buffer.toString("utf8", next, next + length), end: next + length + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items: RespValue[] = [];
      let offset = next;
      for (let i = 0; i < count; i++) {
        const item = parseResp(buffer, offset);
        if (!item) return undefined;
        if (item.value instanceof RedisReplyError) return { value: item.value, end: item.end };
        items.push(item.value);
        offset = item.end;
      }
      return { value: items, end: offset };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

function encodeCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(""));
}

/**
 * Sends one command to Redis over a fresh connection and returns the reply:
 * a dependency-free probe for tests (`await redisCommand(url, ["PING"])`).
 */
export function redisCommand(
  target: Target,
  args: readonly string[],
  options: { timeoutMs?: number } = {},
): Promise<RespValue> {
  return converse(target, options.timeoutMs ?? 2_000, encodeCommand(args), (buffer) => {
    const parsed = parseResp(buffer, 0);
    if (!parsed) return undefined;
    if (parsed.value instanceof RedisReplyError) throw parsed.value;
    return { done: true, value: parsed.value };
  });
}

/** An HTTP response as text. */
export interface HttpResponse {
  status: number;
  body: string;
}

/** One HTTP request with a deadline; `body` objects are sent as JSON. */
export function httpRequest(
  url: string,
  options: { method?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<HttpResponse> {
  const timeoutMs = options.timeoutMs ?? 2_000;
  const payload =
    options.body === undefined
      ? undefined
      : typeof options.body === "string"
        ? options.body
        : JSON.stringify(options.body);
  return new Promise<HttpResponse>((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? (payload === undefined ? "GET" : "POST"),
        agent: false,
        headers:
          payload === undefined
            ? {}
            : {
                "content-type": "application/json",
                "content-length": Buffer.byteLength(payload),
              },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
        });
        res.on("error", (error) => {
          clearTimeout(timer);
          reject(error);
        });
      },
    );
    const timer = setTimeout(
      () => req.destroy(new Error(`no HTTP reply from ${url} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end(payload);
  });
}

/** An ErrorResponse from PostgreSQL; `code` is the SQLSTATE (e.g. 57P03 while starting). */
export class PgServerError extends Error {
  override readonly name = "PgServerError";
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Where {@link pgQuery} connects: a URL, host and port, or the Unix socket file. */
export type PgTarget =
  | string
  | { host: string; port: number; user?: string; database?: string }
  | { path: string; user?: string; database?: string };

function pgIdentity(target: PgTarget): { user: string; database: string } {
  if (typeof target === "string") {
    const url = new URL(target);
    const user = decodeURIComponent(url.username) || "postgres";
    const database = decodeURIComponent(url.pathname.replace(/^\//, "")) || user;
    return { user, database };
  }
  const user = target.user ?? "postgres";
  return { user, database: target.database ?? user };
}

function cstring(value: string): Buffer {
  return Buffer.concat([Buffer.from(value, "utf8"), Buffer.from([0])]);
}

function message(type: string, payload: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, "latin1");
  header.writeInt32BE(payload.length + 4, 1);
  return Buffer.concat([header, payload]);
}

/**
 * Runs one simple query over PostgreSQL's wire protocol (trust
 * authentication only) and returns the rows of the last result as text:
 * a dependency-free probe for tests, not a client.
 */
export function pgQuery(
  target: PgTarget,
  sql: string,
  options: { timeoutMs?: number } = {},
): Promise<(string | null)[][]> {
  const { user, database } = pgIdentity(target);
  const params = Buffer.concat([
    cstring("user"),
    cstring(user),
    cstring("database"),
    cstring(database),
    cstring("application_name"),
    cstring("locks-testkit"),
    Buffer.from([0]),
  ]);
  const startup = Buffer.alloc(8);
  startup.writeInt32BE(params.length + 8, 0);
  startup.writeInt32BE(196608, 4); // protocol 3.0
  let offset = 0;
  let querySent = false;
  let rows: (string | null)[][] = [];
  let failure: PgServerError | undefined;
  return converse(
    target,
    options.timeoutMs ?? 2_000,
    Buffer.concat([startup, params]),
    (buffer, socket) => {
      while (buffer.length >= offset + 5) {
        const type = String.fromCharCode(buffer[offset]!);
        const length = buffer.readInt32BE(offset + 1);
        if (buffer.length < offset + 1 + length) return undefined;
        const body = buffer.subarray(offset + 5, offset + 1 + length);
        offset += 1 + length;
        switch (type) {
          case "R": {
            const code = body.readInt32BE(0);
            if (code !== 0) {
              throw new Error(
                `pgQuery supports trust authentication only (server asked for method ${code})`,
              );
            }
            break;
          }
          case "E": {
            const fields = new Map<string, string>();
            let i = 0;
            while (i < body.length && body[i] !== 0) {
              const key = String.fromCharCode(body[i]!);
              const end = body.indexOf(0, i + 1);
              fields.set(key, body.toString("utf8", i + 1, end));
              i = end + 1;
            }
            failure = new PgServerError(fields.get("M") ?? "error", fields.get("C") ?? "");
            // Before the startup finished an error ends the connection.
            if (!querySent) throw failure;
            break;
          }
          case "T":
            rows = [];
            break;
          case "D": {
            const count = body.readInt16BE(0);
            const row: (string | null)[] = [];
            let i = 2;
            for (let c = 0; c < count; c++) {
              const len = body.readInt32BE(i);
              i += 4;
              if (len < 0) row.push(null);
              else {
                row.push(body.toString("utf8", i, i + len));
                i += len;
              }
            }
            rows.push(row);
            break;
          }
          case "Z":
            if (!querySent) {
              querySent = true;
              socket.write(message("Q", cstring(sql)));
            } else {
              socket.write(message("X", Buffer.alloc(0)));
              if (failure) throw failure;
              return { done: true, value: rows };
            }
            break;
          default:
            // S (parameter status), K (backend key), N (notice), C (complete), I (empty query)
            break;
        }
      }
      return undefined;
    },
  );
}
