import { lockClosed, monotonicNow, retryInBackground } from "@locks/core/backend";
import { type Cluster, Command, Redis, type RedisOptions } from "ioredis";
import {
  isCluster,
  SAFE_CLIENT_OPTIONS,
  safeDuplicate,
  serverName,
  shutDown,
  unsafeOptions,
} from "./clients.js";
import { type Script, scripts } from "./scripts.js";
import { unavailable } from "./unavailable.js";

/** ioredis client statuses after which nothing is sent until a new connection is ready. */
const DOWN = new Set(["reconnecting", "close", "end", "disconnecting"]);

/** How often calls are checked for their reply timeout: it need not be precise to the ms. */
const SWEEP_MS = 5;
/**
 * How much longer a call may wait while its connection is made and the
 * scripts loaded (a fresh client, a busy event loop): its reply timeout
 * starts when it is sent, so that connecting is not mistaken for a silent server.
 */
const CONNECT_GRACE_MS = 2_000;

/** One script call, from `run` until it settles. */
interface Call {
  /** EVALSHA's arguments: sha, number of keys, keys, then the script's arguments. */
  readonly args: Array<string | number>;
  readonly timeoutMs: number;
  /** Monotonic instant after which it fails as unanswered: from when it is sent. */
  at: number;
  /** The command to send, made with the call (its promise is what `run` returns); a resend makes another. */
  command: Command | undefined;
  /** Settle the promise `run` returned (the first command's own resolve and reject). */
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
}

/**
 * A client the backend sends lock commands through, whether it made it (and
 * closes it) or was given it. Every such client has the options
 * RELIABILITY.md requires (`SAFE_CLIENT_OPTIONS`: no offline queue, no
 * resend after a reconnect); the constructor asserts it.
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
  /** `host:port` (or the Cluster's nodes), named in BACKEND_UNAVAILABLE errors. */
  readonly server: string;
  /** The client's `keyPrefix`: ioredis adds it to keys and shard channels, never to plain channels. */
  readonly keyPrefix: string;
  /** Every call not settled yet (waiting or sent): their reply timeouts, and what `close()` settles. */
  readonly #calls = new Set<Call>();
  /** Checks `#calls` for their timeouts while there are any: a timer per call would cost more than the call. */
  #sweep: NodeJS.Timeout | undefined;
  /** Clean-ups being retried in the background, by owner: see `cancelCleanUp`. */
  readonly #cleanUps = new Map<string, AbortController>();
  /** A client of ours whose oldest command is unanswered this long is reconnected. */
  readonly #staleMs: number;
  /**
   * Calls sent and not answered yet, and when the last answer (or the first
   * call) came: dated by the sweep (`#progressed` since its last run), so a
   * call costs no clock read of its own but when it is sent.
   */
  #inflight = 0;
  #progressAt = 0;
  #progressed = false;
  /** What every command is made with: the client's keyPrefix (ioredis adds it to the keys). */
  readonly #commandOptions: { keyPrefix?: string; replyEncoding: "utf8" };
  /** Ends the background retries of clean-ups. */
  readonly #closed = new AbortController();
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
    this.#lastError = undefined;
    this.#kick();
  };
  readonly #onClose = (): void => {
    this.#usable = false;
    this.#failWaiting(this.#lastError ?? new Error("connection closed"));
  };
  readonly #onError = (error: unknown): void => {
    this.#lastError = error;
  };

  constructor(client: Redis | Cluster, owned: boolean, staleMs: number) {
    const unsafe = unsafeOptions(client);
    // A bug of ours: every client that carries lock commands must have them.
    if (unsafe.length > 0)
      throw new Error(`a lock command client must not have ${unsafe.join(", ")} enabled`);
    this.client = client;
    this.owned = owned;
    this.#staleMs = staleMs;
    this.isCluster = isCluster(client);
    this.server = serverName(client);
    this.publishCommand = this.isCluster ? "spublish" : "publish";
    const prefix = client.options.keyPrefix;
    this.keyPrefix = prefix === undefined ? "" : String(prefix);
    this.#commandOptions =
      prefix === undefined
        ? { replyEncoding: "utf8" }
        : { keyPrefix: this.keyPrefix, replyEncoding: "utf8" };
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
   * Uses a client the user gave: as it is when it has the safe options
   * (never closed), otherwise through a duplicate of it that has them (made
   * and closed by the backend; the given client is never modified).
   */
  static given(client: Redis | Cluster, staleMs: number): Connection {
    if (unsafeOptions(client).length === 0) return new Connection(client, false, staleMs);
    return new Connection(safeDuplicate(client), true, staleMs);
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
        this.unavailable(this.#lastError ?? new Error(`not connected (${status})`)),
      );
    }
    // The promise returned is the command's own (no layer of ours around it): its resolve and
    // reject are taken over, so that a reply, an error, a timeout or close() settles it once.
    const all: Array<string | number> = [script.sha, keys.length, ...keys, ...args];
    const command = new Command("evalsha", all, this.#commandOptions);
    const call: Call = {
      args: all,
      timeoutMs,
      at: 0,
      command,
      resolve: command.resolve,
      reject: command.reject,
    };
    this.#calls.add(call);
    if (this.#sweep === undefined) {
      this.#sweep = setInterval(() => this.#expire(), SWEEP_MS).unref();
      this.#progressed = true;
    }
    if (this.#usable && status === "ready" && this.#queue.length + this.#retries.length === 0) {
      this.#send(call);
    } else {
      call.at = monotonicNow() + timeoutMs + CONNECT_GRACE_MS;
      this.#queue.push(call);
      this.#kick();
    }
    return command.promise;
  }

  /**
   * An owner-checked clean-up (a release, leaving a queue) for `owner`: runs
   * it, and when it fails, retries it in the background until it succeeds,
   * the connection closes, `withinMs` passed (the hold has then expired on
   * its own), or `owner` attempts again (`cancelCleanUp`). Rejects like `run`.
   */
  cleanUp(
    owner: string,
    script: Script,
    keys: readonly string[],
    args: ReadonlyArray<string | number>,
    timeoutMs: number,
    withinMs: number,
  ): Promise<unknown> {
    // No closure is made unless it failed: this is every release's path.
    return this.run(script, keys, args, timeoutMs).catch((error: unknown) => {
      this.#cleanUps.get(owner)?.abort();
      const retrying = new AbortController();
      this.#cleanUps.set(owner, retrying);
      const signal = AbortSignal.any([this.#closed.signal, retrying.signal]);
      void retryInBackground(() => this.run(script, keys, args, timeoutMs), {
        signal,
        giveUpAfterMs: withinMs,
      }).finally(() => {
        if (this.#cleanUps.get(owner) === retrying) this.#cleanUps.delete(owner);
      });
      throw error;
    });
  }

  /**
   * Stops retrying `owner`'s clean-up: called before each attempt of a
   * request. The core may hand back a grant and attempt again with the same
   * owner (a grant that came too late, a Redlock attempt without a majority):
   * a clean-up sent again after that attempt's acquire would delete its new
   * grant. One sent before is ahead of the attempt on this connection.
   */
  cancelCleanUp(owner: string): void {
    if (this.#cleanUps.size === 0) return;
    this.#cleanUps.get(owner)?.abort();
    this.#cleanUps.delete(owner);
  }

  /** The error to report when the server cannot be reached: it names the server and the plain cause. */
  unavailable(cause: unknown): Error {
    return unavailable(this.server, cause);
  }

  /**
   * Stops listening to the client, settles every call not answered yet (a
   * server that stopped answering never will), and closes the client when
   * the backend made it, without waiting for a dead server: its socket is
   * closed, and no timer of this connection is left, when this resolves.
   */
  async close(): Promise<void> {
    this.#closed.abort();
    this.client.off("ready", this.#onReady);
    this.client.off("close", this.#onClose);
    this.#retries = [];
    this.#queue = [];
    for (const call of [...this.#calls]) this.#settle(call, undefined, lockClosed("redis backend"));
    clearInterval(this.#sweep);
    if (!this.owned) return;
    await shutDown(this.client);
    this.client.off("error", this.#onError);
  }

  /** Fails the calls whose reply timeout passed. */
  #expire(): void {
    if (this.#calls.size === 0) {
      clearInterval(this.#sweep);
      this.#sweep = undefined;
      return;
    }
    const now = monotonicNow();
    if (this.#progressed) {
      this.#progressed = false;
      this.#progressAt = now;
    }
    const expired: Call[] = [];
    for (const call of this.#calls) if (call.at <= now) expired.push(call);
    if (expired.length === 0) return;
    // After the event loop was blocked (a loaded machine, a long GC) timers run before the
    // sockets are read: replies that arrived meanwhile are read in the poll phase that
    // follows, and settle their calls before this check phase callback. A busy client is
    // never mistaken for a silent server.
    setImmediate(() => {
      for (const call of expired) {
        const error = new Error(`no reply within ${Math.round(call.timeoutMs)} ms`);
        this.#settle(call, undefined, this.unavailable(error));
      }
      // Redis answers in order: with nothing answered for long, everything behind is stuck too
      // (a dead peer that never sent a reset). A connection of ours is replaced then. (ioredis'
      // socketTimeout would, but its timer outlives close() and fires after a blocked event loop.)
      const stale = this.#inflight > 0 && monotonicNow() - this.#progressAt >= this.#staleMs;
      if (this.owned && stale && this.client.status === "ready") this.client.disconnect(true);
    });
  }

  #send(call: Call): void {
    call.at = monotonicNow() + call.timeoutMs;
    if (this.#inflight++ === 0) this.#progressed = true;
    const command = call.command ?? new Command("evalsha", call.args, this.#commandOptions);
    call.command = undefined;
    command.resolve = (value: unknown): void => {
      this.#replied();
      this.#settle(call, value, undefined);
    };
    command.reject = (error: unknown): void => {
      this.#replied();
      if (error instanceof Error && error.message.startsWith("NOSCRIPT") && this.#calls.has(call)) {
        // It did not run. Load the scripts again and resend it before anything newer.
        this.#usable = false;
        this.#retries.push(call);
        this.#kick();
        return;
      }
      this.#settle(call, undefined, this.unavailable(error));
    };
    void this.client.sendCommand(command);
  }

  #replied(): void {
    this.#inflight--;
    this.#progressed = true;
  }

  #settle(call: Call, value: unknown, error: unknown): void {
    if (!this.#calls.delete(call)) return;
    if (error === undefined) call.resolve(value);
    else call.reject(error as Error);
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
      if (this.#calls.has(call)) this.#send(call);
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
}
