import { backendUnavailable, monotonicNow } from "@locks/core";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import { Deadlines, type Expiring } from "./deadlines.js";
import { type Script, scripts } from "./scripts.js";

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

/** One script call, from `run` until it settles. */
class Call implements Expiring {
  readonly at: number;
  settled = false;

  constructor(
    readonly connection: Connection,
    readonly script: Script,
    readonly keys: readonly string[],
    readonly args: ReadonlyArray<string | number>,
    readonly timeoutMs: number,
    readonly resolve: (value: unknown) => void,
    readonly reject: (error: unknown) => void,
  ) {
    this.at = monotonicNow() + timeoutMs;
  }

  expire(): void {
    this.connection.expired(this);
  }
}

/**
 * A client the backend uses, whether it made it (and closes it) or was given it.
 *
 * Order matters: a release sent after an acquire must run after it, or the
 * acquire takes a lock nobody will release (until its TTL). Redis runs the
 * commands of one connection in order; this class keeps that order through
 * the two moments ioredis alone would not:
 *
 * - before the first command on a new connection it loads every script
 *   (SCRIPT LOAD), and calls made meanwhile wait, in order, for at most their
 *   own timeout (never in ioredis' offline queue: a call that gave up is never
 *   sent later);
 * - a call answered NOSCRIPT (the server's script cache was emptied) did not
 *   run: the scripts are loaded again, and such calls are resent in the order
 *   they were first sent, before any newer one. (A plain EVAL fallback would
 *   let a later call overtake it.)
 */
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
  /** Calls sent and not answered yet, and when the last answer (or the first call) came. */
  #inflight = 0;
  #progressAt = 0;
  /** Connected and the scripts loaded: calls go straight out. */
  #usable = false;
  #loading = false;
  /** Calls answered NOSCRIPT, in the order they were sent: they go out again first. */
  #retries: Call[] = [];
  /** Calls waiting for the connection (or the scripts), in call order. */
  #queue: Call[] = [];
  #lastError: unknown;
  readonly #onReady = (): void => {
    this.#usable = false;
    this.#flushDeferred();
    this.#kick();
  };
  readonly #onClose = (): void => {
    this.#usable = false;
    this.#failWaiting(new Error(`connection closed${this.#errorDetail()}`));
  };
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
    client.on("close", this.#onClose);
    // A client we made must not print "Unhandled error event"; a user's client is theirs to watch.
    if (owned) client.on("error", this.#onError);
  }

  /** Makes a client for `url` with the safe options (user options cannot turn them off). */
  static create(url: string, options: RedisOptions | undefined, staleMs: number): Connection {
    return new Connection(new Redis(url, { ...options, ...SAFE_CLIENT_OPTIONS }), true, staleMs);
  }

  /**
   * Runs `script` in call order, failing with BACKEND_UNAVAILABLE at once
   * while the client is reconnecting or down, or when no reply came within
   * `timeoutMs` (the command may still run: callers treat the outcome as
   * unknown and clean up by owner).
   */
  run(
    script: Script,
    keys: readonly string[],
    args: ReadonlyArray<string | number>,
    timeoutMs: number,
  ): Promise<unknown> {
    const status = this.client.status;
    if (DOWN.has(status)) {
      return Promise.reject(
        this.unavailable(new Error(`connection is ${status}${this.#errorDetail()}`)),
      );
    }
    return new Promise((resolve, reject) => {
      const call = new Call(this, script, keys, args, timeoutMs, resolve, reject);
      this.#deadlines.add(call);
      if (
        this.#usable &&
        status === "ready" &&
        this.#queue.length === 0 &&
        this.#retries.length === 0
      ) {
        this.#send(call);
        return;
      }
      this.#queue.push(call);
      this.#kick();
    });
  }

  /** @internal A call's deadline passed without a reply. */
  expired(call: Call): void {
    this.#settle(
      call,
      undefined,
      this.unavailable(new Error(`no reply within ${Math.round(call.timeoutMs)} ms`)),
    );
    // Redis answers in order: with nothing answered for long, everything behind is stuck too (a
    // dead peer that never sent a reset). A connection of ours is replaced then.
    if (this.owned && this.#inflight > 0 && monotonicNow() - this.#progressAt >= this.#staleMs) {
      this.#recycle();
    }
  }

  /**
   * Remembers an owner-checked clean-up that could not reach the server, and
   * runs it when the connection is ready again (after the calls already
   * waiting), unless `until` (monotonic) passed first: by then the hold
   * expired on its own.
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
    this.client.off("close", this.#onClose);
    this.#failWaiting(new Error("the backend was closed"));
    if (!this.owned) return;
    await quit(this.client, Math.min(this.#staleMs, QUIT_WAIT_MS));
    this.client.off("error", this.#onError);
  }

  #send(call: Call): void {
    if (this.#inflight++ === 0) this.#progressAt = monotonicNow();
    this.client.evalsha(call.script.sha, call.keys.length, ...call.keys, ...call.args).then(
      (value) => {
        this.#replied();
        this.#settle(call, value, undefined);
      },
      (error: unknown) => {
        this.#replied();
        if (error instanceof Error && error.message.startsWith("NOSCRIPT") && !call.settled) {
          // It did not run. Load the scripts again and resend it before anything newer.
          this.#usable = false;
          this.#retries.push(call);
          this.#kick();
          return;
        }
        this.#settle(call, undefined, this.unavailable(error));
      },
    );
  }

  #replied(): void {
    this.#inflight--;
    this.#progressAt = monotonicNow();
  }

  #settle(call: Call, value: unknown, error: unknown): void {
    if (call.settled) return;
    call.settled = true;
    this.#deadlines.delete(call);
    if (error === undefined) call.resolve(value);
    else call.reject(error);
  }

  /** Moves things along: connects a lazy client, loads the scripts, sends what waits. */
  #kick(): void {
    const status = this.client.status;
    if (status === "wait") {
      this.client.connect().catch(() => undefined);
      return;
    }
    if (status !== "ready" || this.#loading) return;
    if (this.#usable) {
      this.#drain();
      return;
    }
    this.#loading = true;
    this.#loadScripts().then(
      () => {
        this.#loading = false;
        this.#usable = true;
        this.#drain();
      },
      (error: unknown) => {
        this.#loading = false;
        this.#failWaiting(error);
      },
    );
  }

  #drain(): void {
    while (this.#usable && this.client.status === "ready") {
      const call = this.#retries.shift() ?? this.#queue.shift();
      if (call === undefined) return;
      if (!call.settled) this.#send(call);
    }
  }

  /** SCRIPT LOAD of every script, on the server or every Cluster master (one round trip). */
  async #loadScripts(): Promise<void> {
    const targets: Array<Redis | Cluster> = this.isCluster
      ? (this.client as Cluster).nodes("master")
      : [this.client];
    const all = Object.values(scripts);
    await Promise.all(targets.flatMap((target) => all.map((s) => target.script("LOAD", s.lua))));
  }

  #failWaiting(cause: unknown): void {
    const waiting = [...this.#retries, ...this.#queue];
    this.#retries = [];
    this.#queue = [];
    for (const call of waiting) this.#settle(call, undefined, this.unavailable(cause));
  }

  #flushDeferred(): void {
    const now = monotonicNow();
    for (const [id, entry] of this.#deferred) {
      this.#deferred.delete(id);
      if (entry.until > now) void entry.run().catch(() => undefined);
    }
  }

  #recycle(): void {
    // The calls in flight are rejected by ioredis (and so counted as answered).
    if (this.client.status === "ready") this.client.disconnect(true);
  }

  #errorDetail(): string {
    return this.#lastError instanceof Error ? `: ${this.#lastError.message}` : "";
  }
}

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
