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
  /** Releases that failed while the server was unreachable, retried once it is ready again. */
  readonly #deferred = new Map<string, { run: () => Promise<unknown>; until: number }>();
  readonly #onReady = (): void => this.#flushDeferred();
  readonly #deadlines = new Deadlines();
  #lastError: unknown;
  readonly #onError = (error: unknown): void => {
    this.#lastError = error;
  };

  constructor(client: Redis | Cluster, owned: boolean) {
    this.client = client;
    this.owned = owned;
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
  static create(url: string, options: RedisOptions | undefined): Connection {
    return new Connection(new Redis(url, { ...options, ...SAFE_CLIENT_OPTIONS }), true);
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
    const status = this.client.status;
    if (status === "ready") return this.#timed(script.run(this.client, keys, args), timeoutMs);
    const deadline = monotonicNow() + timeoutMs;
    return this.#whenReady(timeoutMs).then(() =>
      this.#timed(script.run(this.client, keys, args), Math.max(1, deadline - monotonicNow())),
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
    try {
      if (this.client.status === "ready") await this.client.quit();
      else this.client.disconnect();
    } catch {
      this.client.disconnect();
    } finally {
      this.client.off("error", this.#onError);
    }
  }

  #flushDeferred(): void {
    const now = monotonicNow();
    for (const [id, entry] of this.#deferred) {
      this.#deferred.delete(id);
      if (entry.until > now) void entry.run().catch(() => undefined);
    }
  }

  #timed(command: Promise<unknown>, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const forget = this.#deadlines.add(timeoutMs, () => {
        reject(this.unavailable(new Error(`no reply within ${Math.round(timeoutMs)} ms`)));
      });
      command.then(
        (value) => {
          forget();
          resolve(value);
        },
        (error: unknown) => {
          forget();
          reject(this.unavailable(error));
        },
      );
    });
  }

  /** Waits for a first connection (bounded); refuses at once while reconnecting or closed. */
  #whenReady(timeoutMs: number): Promise<void> {
    const client = this.client;
    const status = client.status;
    if (DOWN.has(status)) {
      const detail = this.#lastError instanceof Error ? `: ${this.#lastError.message}` : "";
      return Promise.reject(this.unavailable(new Error(`connection is ${status}${detail}`)));
    }
    return new Promise<void>((resolve, reject) => {
      const done = (error?: Error): void => {
        clearTimeout(timer);
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
      const timer = setTimeout(
        () => done(new Error(`not connected within ${Math.round(timeoutMs)} ms`)),
        timeoutMs,
      );
      client.once("ready", onReady);
      client.once("close", onClose);
      client.once("end", onClose);
      if (status === "wait") client.connect().catch(() => undefined);
    });
  }
}
