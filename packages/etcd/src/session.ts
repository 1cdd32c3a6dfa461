import { driftAllowance, Liveness, monotonicNow } from "@locks/core/backend";
import type {
  IDuplexStream,
  ILeaseKeepAliveRequest,
  ILeaseKeepAliveResponse,
  LeaseClient,
} from "etcd3";
import { type CallOptions, endStream } from "./calls.js";

/** What a session needs from the backend that owns it. */
export interface SessionHost<M> {
  readonly leases: LeaseClient;
  /** Call options for one request, with the backend's request deadline. */
  request(): CallOptions;
  /** Call options for a stream. */
  stream(): CallOptions;
  readonly requestTimeoutMs: number;
  /** The lease is gone, or may be: every key in it is lost. Called once. */
  sessionLost(session: Session<M>, reason: string, cause?: unknown): void;
}

type Stream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** One keepalive sent (or about to be) on the stream, answered in order. */
interface Keepalive {
  readonly sentAt: number;
  readonly done: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * One etcd lease shared by every key a backend instance writes with one TTL
 * (etcd's "session"), kept alive over one keepalive stream by the toolkit's
 * `Liveness`, which declares it lost when no keepalive was confirmed within
 * the TTL: at our own deadline, not when etcd3 would tell (about 2x TTL late).
 * Grants and extensions may send a keepalive of their own (`confirmSince`),
 * so the session also knows the latest send time the server confirmed: the
 * lease cannot expire before that instant plus its TTL.
 */
export class Session<M> {
  /** The lease id, decimal as etcd3 returns it. */
  readonly id: string;
  /** The lease id in hex, as etcdctl shows it; part of every key of this session. */
  readonly hex: string;
  /** The TTL asked for, in whole seconds (the key of the session in the backend). */
  readonly seconds: number;
  /** The TTL the server granted (never below its minimum, 2 s by default), in ms. */
  readonly ttlMs: number;
  /** Contenders whose keys live in this lease. */
  readonly members = new Set<M>();
  /** Name slots of deleted keys, reused so that a hot lock does not pile up key names. */
  readonly #freeSlots: number[] = [];
  #nextSlot = 0;
  readonly #host: SessionHost<M>;
  #state: "open" | "retired" | "lost" | "ended" = "open";
  #confirmedSentAt: number;
  readonly #liveness: Liveness;
  #stream: Stream | undefined;
  #opening: Promise<Stream> | undefined;
  #pending: Keepalive[] = [];
  #replyTimer: NodeJS.Timeout | undefined;
  #revoked: Promise<void> | undefined;

  /** Grants a lease of `seconds` and starts keeping it alive. */
  static async grant<M>(host: SessionHost<M>, seconds: number): Promise<Session<M>> {
    // Taken before the request: the server's TTL starts later, so this is conservative.
    const sentAt = monotonicNow();
    const reply = await host.leases.leaseGrant({ TTL: seconds }, host.request());
    if (reply.error) throw new Error(`etcd refused the lease: ${reply.error}`);
    return new Session(host, seconds, reply.ID, Number(reply.TTL) * 1000, sentAt);
  }

  private constructor(
    host: SessionHost<M>,
    seconds: number,
    id: string,
    ttlMs: number,
    sentAt: number,
  ) {
    this.#host = host;
    this.seconds = seconds;
    this.id = id;
    this.hex = BigInt(id).toString(16);
    this.ttlMs = ttlMs;
    this.#confirmedSentAt = sentAt;
    this.#liveness = new Liveness({
      validForMs: ttlMs,
      intervalMs: ttlMs / 3,
      beat: () => this.#keepalive(),
      lost: (cause) =>
        this.lose("no keepalive of the session lease was confirmed within its TTL", cause),
    });
  }

  /** True while the lease is kept alive (new keys may be written to it unless retired). */
  get alive(): boolean {
    return this.#state === "open" || this.#state === "retired";
  }

  /** True when new contenders may join this session. */
  get open(): boolean {
    return this.#state === "open";
  }

  /**
   * The monotonic instant until which the lease surely lives, as far as this
   * process knows: the last confirmed keepalive's send time plus the TTL,
   * minus the clock-drift allowance.
   */
  validUntil(): number {
    return this.#confirmedSentAt + this.ttlMs - driftAllowance(this.ttlMs);
  }

  /**
   * Resolves once a keepalive sent at or after `since` has been confirmed
   * (at once when one already was); rejects when the keepalive fails.
   */
  confirmSince(since: number): Promise<void> {
    if (this.#confirmedSentAt >= since) return Promise.resolve();
    if (!this.alive) return Promise.reject(new Error("the session lease is lost"));
    return this.#pending.find((k) => k.sentAt >= since)?.done ?? this.#keepalive();
  }

  /**
   * A number for a new key name, unique among this session's live keys.
   * Names are reused once their key is surely deleted: etcd keeps an index
   * entry for every key name ever written until the next compaction, and the
   * range reads of a lock visit them all.
   */
  takeSlot(): number {
    return this.#freeSlots.pop() ?? this.#nextSlot++;
  }

  /** Returns a slot whose key is deleted (and no write to it is in flight). */
  freeSlot(slot: number): void {
    if (this.alive) this.#freeSlots.push(slot);
  }

  /** Stops accepting new contenders; the lease lives on for the keys already in it. */
  retire(): void {
    if (this.#state === "open") this.#state = "retired";
  }

  /** Declares the lease lost (expired, revoked, or presumed so): every key in it is lost. */
  lose(reason: string, cause?: unknown): void {
    if (!this.alive) return;
    this.#state = "lost";
    this.#stop(cause ?? new Error(reason));
    this.#host.sessionLost(this, reason, cause);
    // If the server still has it (we only presumed it lost), free its keys now.
    void this.#revoke();
  }

  /** Stops the keepalive and revokes the lease: every key in it is deleted at once. */
  end(): Promise<void> {
    if (this.alive) {
      this.#state = "ended";
      this.#stop(new Error("the session was ended"));
    }
    return this.#revoke();
  }

  /** One keepalive; resolves when the server confirmed it. */
  #keepalive(): Promise<void> {
    let settle: Pick<Keepalive, "resolve" | "reject"> | undefined;
    const done = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const keepalive: Keepalive = { sentAt: monotonicNow(), done, ...settle! };
    this.#pending.push(keepalive);
    this.#open().then(
      (stream) => {
        if (!this.#pending.includes(keepalive)) return;
        stream.write({ ID: this.id });
        // A keepalive that gets no reply in time resets the stream (a paused or partitioned server).
        if (this.#replyTimer === undefined) this.#armReply();
      },
      (error: unknown) => this.#reset(error),
    );
    return done;
  }

  #open(): Promise<Stream> {
    if (!this.alive) return Promise.reject(new Error("the session lease is lost"));
    if (this.#stream !== undefined) return Promise.resolve(this.#stream);
    this.#opening ??= this.#host.leases.leaseKeepAlive(this.#host.stream()).then(
      (stream) => {
        this.#opening = undefined;
        if (!this.alive) {
          endStream(stream);
          throw new Error("the session lease is lost");
        }
        this.#stream = stream;
        stream
          .on("data", (reply) => {
            if (this.#stream === stream) this.#onReply(reply);
          })
          .on("error", (error) => {
            if (this.#stream === stream) this.#reset(error, true);
          })
          .on("end", () => {
            if (this.#stream === stream) this.#reset(new Error("the keepalive stream ended"), true);
          });
        return stream;
      },
      (error: unknown) => {
        this.#opening = undefined;
        throw error;
      },
    );
    return this.#opening;
  }

  #onReply(reply: ILeaseKeepAliveResponse): void {
    const keepalive = this.#pending.shift();
    if (keepalive === undefined) return;
    if (!(Number(reply.TTL) > 0)) {
      const error = new Error("etcd no longer knows the session lease (revoked or expired)");
      keepalive.reject(error);
      this.lose("the session lease was revoked or expired on the server", error);
      return;
    }
    this.#confirmedSentAt = Math.max(this.#confirmedSentAt, keepalive.sentAt);
    keepalive.resolve();
    this.#armReply();
  }

  #armReply(): void {
    clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
    if (this.#pending.length === 0) return;
    const ms = Math.min(this.#host.requestTimeoutMs, Math.max(250, this.ttlMs / 3));
    this.#replyTimer = setTimeout(() => {
      this.#replyTimer = undefined;
      this.#reset(new Error(`no keepalive reply within ${Math.round(ms)} ms`), true);
    }, ms);
    this.#replyTimer.unref();
  }

  /**
   * Drops the stream and fails the keepalives waiting on it; the next one
   * opens a new stream. A broken stream is cancelled; a healthy one is ended:
   * etcd3 takes the error of a cancelled stream for a failure of the member
   * and resets every connection to it.
   */
  #reset(error: unknown, broken = false): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream !== undefined) endStream(stream, broken);
    const pending = this.#pending;
    this.#pending = [];
    for (const keepalive of pending) keepalive.reject(error);
    clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
  }

  #stop(error: unknown): void {
    this.#liveness.stop();
    this.#reset(error);
  }

  #revoke(): Promise<void> {
    this.#revoked ??= this.#host.leases.leaseRevoke({ ID: this.id }, this.#host.request()).then(
      () => undefined,
      () => undefined, // unknown lease (already gone) or unreachable: it expires by itself
    );
    return this.#revoked;
  }
}
