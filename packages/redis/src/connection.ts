import { backendUnavailable, monotonicNow } from "@locks/core";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import { Deadlines } from "./deadlines.js";
import type { Script } from "./scripts.js";

/** ioredis client statuses after which nothing is sent until a new connection is ready. */
const DOWN = new Set(["reconnecting", "close", "end", "disconnecting"]);

/**
 * The options every client made by this package gets: a lock command is
 * never queued while disconnected nor replayed after a reconnect (a late
 * `SET NX` would grab a lock nobody waits for any more). Commands fail fast
 * instead, with BACKEND_UNAVAILABLE.
 */
export const SAFE_CLIENT_OPTIONS = {
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  lazyConnect: true,
} as const satisfies RedisOptions;

/** A client the backend uses, whether it made it (and closes it) or was given it. */
export class Connection {
  readonly client: Redis | Cluster;
  /** True when the backend created the client, so `close()` quits it. */
  readonly owned: boolean;
  /** `spublish` on Cluster (sharded pub/sub, Redis 7), `publish` otherwise. */
  readonly publishCommand: "publish" | "spublish";
  readonly isCluster: boolean;
  /** The client's `keyPrefix`: ioredis adds it to keys and shard channels, never to plain channels. */
  readonly keyPrefix: string;
  /** A client of ours whose oldest command is unanswered this long is reconnected. */
  readonly #staleMs: number;
  readonly #deadlines = new Deadlines();
  /** Releases that failed while the server was unreachable, retried once it is ready again. */
  readonly #deferred = new Map<string, { run: () => Promise<unknown>; until: number }>();
  /** One wait for the first connection, shared by every command sent meanwhile. */
  #ready: Promise<void> | undefined;
  #lastError: unknown;
  readonly #onReady = (): void => this.#flushDeferred();
  readonly #onError = (error: unknown): void => {
    this.#lastError = error;
  };

  constructor(client: Redis | Cluster, owned: boolean, staleMs: number) {
    this.client = client;
    this.owned = owned;
    this.#staleMs = staleMs;
    this.isCluster =
      client instanceof Cluster || (client as { isCluster?: boolean }).isCluster === true;
    this.publishCommand = this.isCluster ? "spublish" : "publish";
    const prefix = client.options.keyPrefix;
    this.keyPrefix = prefix === undefined ? "" : String(prefix);
    client.on("ready", this.#onReady);
    // A client we made must not print "Unhandled error event"; a user's client is theirs to watch.
    if (owned) client.on("error", this.#onError);
  }

  /** Makes a client for `url` with the safe options (user options cannot turn them off). */
  static create(url: string, options: RedisOptions | undefined, staleMs: number): Connection {
    return new Connection(new Redis(url, { ...options, ...SAFE_CLIENT_OPTIONS }), true, staleMs);
  }

  /**
   * Runs `script` once the client is ready, failing fast with BACKEND_UNAVAILABLE
   * when it is reconnecting or down (never queued for later), or when no reply
   * came within `timeoutMs` (the command may still run: callers treat the
   * outcome as unknown and clean up by owner).
   */
  run(
    script: Script,
    keys: readonly string[],
    args: ReadonlyArray<string | number>,
    timeoutMs: number,
  ): Promise<unknown> {
    if (this.client.status === "ready") return this.#send(script, keys, args, timeoutMs);
    const deadline = monotonicNow() + timeoutMs;
    return this.#whenReady(timeoutMs).then(() =>
      this.#send(script, keys, args, Math.max(1, deadline - monotonicNow())),
    );
  }

  /**
   * Remembers an owner-checked clean-up that could not reach the server, and
   * runs it when the connection is ready again, unless `until` (monotonic)
   * passed first: by then the hold expired on its own.
   */
  defer(id: string, run: () => Promise<unknown>, until: number): void {
    this.#deferred.set(id, { run, until });
  }

  /** The error to report when the server cannot be reached. */
  unavailable(cause: unknown): Error {
    return backendUnavailable("redis", cause);
  }

  /** Stops listening to the client and quits it when the backend made it. */
  async close(): Promise<void> {
    this.#deferred.clear();
    this.client.off("ready", this.#onReady);
    if (!this.owned) return;
    await quit(this.client, Math.min(this.#staleMs, QUIT_WAIT_MS));
    this.client.off("error", this.#onError);
  }

  #flushDeferred(): void {
    const now = monotonicNow();
    for (const [id, entry] of this.#deferred) {
      this.#deferred.delete(id);
      if (entry.until > now) void entry.run().catch(() => undefined);
    }
  }

  #send(
    script: Script,
    keys: readonly string[],
    args: ReadonlyArray<string | number>,
    timeoutMs: number,
  ): Promise<unknown> {
    const command = script.run(this.client, keys, args);
    return new Promise((resolve, reject) => {
      const forget = this.#deadlines.add(timeoutMs, () => {
        reject(this.unavailable(new Error(`no reply within ${Math.round(timeoutMs)} ms`)));
      });
      // Redis answers in order: a command unanswered for long means everything behind it is stuck
      // too (a dead peer that never sent a reset). A connection of ours is replaced then.
      const forgetStale = this.owned
        ? this.#deadlines.add(this.#staleMs, () => this.#recycle())
        : noop;
      command.then(
        (value) => {
          forget();
          forgetStale();
          resolve(value);
        },
        (error: unknown) => {
          forget();
          forgetStale();
          reject(this.unavailable(error));
        },
      );
    });
  }

  #recycle(): void {
    if (this.client.status === "ready") this.client.disconnect(true);
  }

  /** Waits for a first connection (bounded); refuses at once while reconnecting or closed. */
  #whenReady(timeoutMs: number): Promise<void> {
    const status = this.client.status;
    if (DOWN.has(status)) {
      const detail = this.#lastError instanceof Error ? `: ${this.#lastError.message}` : "";
      return Promise.reject(this.unavailable(new Error(`connection is ${status}${detail}`)));
    }
    this.#ready ??= this.#connecting().finally(() => {
      this.#ready = undefined;
    });
    const ready = this.#ready;
    return new Promise<void>((resolve, reject) => {
      const forget = this.#deadlines.add(timeoutMs, () =>
        reject(this.unavailable(new Error(`not connected within ${Math.round(timeoutMs)} ms`))),
      );
      ready.then(
        () => {
          forget();
          resolve();
        },
        (error: unknown) => {
          forget();
          reject(error);
        },
      );
    });
  }

  #connecting(): Promise<void> {
    const client = this.client;
    return new Promise<void>((resolve, reject) => {
      const done = (error?: Error): void => {
        client.off("ready", onReady);
        client.off("close", onClose);
        client.off("end", onClose);
        if (error === undefined) resolve();
        else reject(this.unavailable(error));
      };
      const onReady = (): void => done();
      const onClose = (): void => {
        const detail = this.#lastError instanceof Error ? `: ${this.#lastError.message}` : "";
        done(new Error(`connection closed${detail}`));
      };
      client.once("ready", onReady);
      client.once("close", onClose);
      client.once("end", onClose);
      if (client.status === "wait") client.connect().catch(() => undefined);
    });
  }
}

function noop(): void {}

/** Longest wait for QUIT's reply before the socket is simply closed. */
const QUIT_WAIT_MS = 1_000;

/** QUIT (so the server sees a clean goodbye), or a plain disconnect when it does not answer in time. */
export async function quit(client: Redis | Cluster, waitMs: number = QUIT_WAIT_MS): Promise<void> {
  if (client.status !== "ready") {
    client.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, waitMs);
  });
  await Promise.race([client.quit().catch(() => undefined), late]);
  clearTimeout(timer);
  client.disconnect();
}
