import { driftAllowance, monotonicNow } from "@locks/core";
import type { IBackoff } from "cockatiel";
import type {
  IDuplexStream,
  ILeaseKeepAliveRequest,
  ILeaseKeepAliveResponse,
  LeaseClient,
} from "etcd3";
import { retryBackoff } from "./backoff.js";
import type { CallOptions } from "./calls.js";

/** What a session needs from the backend that owns it. */
export interface SessionHost<M> {
  readonly leases: LeaseClient;
  /** Call options with a deadline `ms` from now. */
  deadline(ms: number): CallOptions;
  /** Call options for a stream. */
  stream(): CallOptions;
  readonly requestTimeoutMs: number;
  /** The lease is gone, or may be: every key in it is lost. Called once. */
  sessionLost(session: Session<M>, reason: string, cause?: unknown): void;
}

type Stream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Pending {
  readonly sentAt: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface InFlight {
  readonly sentAt: number;
  readonly done: Promise<void>;
}

type State = "alive" | "retired" | "lost" | "ended";

/**
 * One etcd lease shared by every key a backend instance writes with one TTL
 * (etcd's "session"). It is kept alive over one keepalive stream, and the
 * session knows, on the monotonic clock, the latest instant a keepalive was
 * sent that the server confirmed: the lease cannot expire before that instant
 * plus its TTL. Past it without a newer confirmation the lease is presumed
 * lost, at our own deadline, not when etcd3 would tell (about 2x TTL late).
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
  #state: State = "alive";
  #confirmedSentAt: number;
  #stream: Stream | undefined;
  #opening: Promise<Stream> | undefined;
  #pending: Pending[] = [];
  readonly #inflight = new Set<InFlight>();
  #beatTimer: NodeJS.Timeout | undefined;
  #lossTimer: NodeJS.Timeout | undefined;
  #replyTimer: NodeJS.Timeout | undefined;
  #revoked: Promise<void> | undefined;
  /** Delays between failed keepalives; starts over after a confirmed one. */
  #backoff: IBackoff<unknown>;

  /** Grants a lease of `seconds` and starts keeping it alive. */
  static async grant<M>(host: SessionHost<M>, seconds: number): Promise<Session<M>> {
    // Taken before the request: the server's TTL starts later, so this is conservative.
    const sentAt = monotonicNow();
    const reply = await host.leases.leaseGrant(
      { TTL: seconds },
      host.deadline(host.requestTimeoutMs),
    );
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
    this.#backoff = keepaliveBackoff(ttlMs);
    this.#armLoss();
    this.#scheduleBeat(this.#interval());
  }

  /** True while the lease is kept alive (new keys may be written to it unless retired). */
  get alive(): boolean {
    return this.#state === "alive" || this.#state === "retired";
  }

  /** True when new contenders may join this session. */
  get open(): boolean {
    return this.#state === "alive";
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
    for (const flight of this.#inflight) if (flight.sentAt >= since) return flight.done;
    return this.#keepalive();
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

  /** Declares the lease lost (etcd said it no longer knows it): every key in it is lost. */
  markLost(reason: string, cause?: unknown): void {
    this.#lose(reason, cause);
  }

  /** Stops accepting new contenders; the lease lives on for the keys already in it. */
  retire(): void {
    if (this.#state === "alive") this.#state = "retired";
  }

  /** Stops the keepalive and revokes the lease: every key in it is deleted at once. */
  end(): Promise<void> {
    if (this.#state === "alive" || this.#state === "retired") {
      this.#state = "ended";
      this.#stop(new Error("the session was ended"));
    }
    return this.#revoke();
  }

  #interval(): number {
    return this.ttlMs / 3;
  }

  #replyTimeout(): number {
    return Math.min(this.#host.requestTimeoutMs, Math.max(250, this.ttlMs / 3));
  }

  #scheduleBeat(delayMs: number): void {
    if (this.#beatTimer !== undefined) clearTimeout(this.#beatTimer);
    this.#beatTimer = setTimeout(() => this.#beat(), Math.max(0, delayMs));
    this.#beatTimer.unref();
  }

  #beat(): void {
    this.#beatTimer = undefined;
    if (!this.alive) return;
    // A keepalive sent for an extension or a grant since the last beat counts too.
    const due = this.#confirmedSentAt + this.#interval();
    const now = monotonicNow();
    if (due > now + 1) {
      this.#scheduleBeat(due - now);
      return;
    }
    this.#keepalive().then(
      () => {
        this.#backoff = keepaliveBackoff(this.ttlMs);
        if (this.alive) this.#scheduleBeat(this.#interval());
      },
      () => {
        const delay = this.#backoff.duration;
        this.#backoff = this.#backoff.next(undefined);
        if (this.alive) this.#scheduleBeat(delay);
      },
    );
  }

  /** One keepalive; resolves when the server confirmed it. */
  #keepalive(): Promise<void> {
    const sentAt = monotonicNow();
    const done = this.#open().then(
      (stream) =>
        new Promise<void>((resolve, reject) => {
          if (stream !== this.#stream) {
            reject(new Error("the keepalive stream was reset"));
            return;
          }
          this.#pending.push({ sentAt, resolve, reject });
          stream.write({ ID: this.id });
          this.#armReply();
        }),
    );
    const flight: InFlight = { sentAt, done };
    this.#inflight.add(flight);
    const forget = (): void => {
      this.#inflight.delete(flight);
    };
    done.then(forget, forget);
    return done;
  }

  #open(): Promise<Stream> {
    if (!this.alive) return Promise.reject(new Error("the session lease is lost"));
    if (this.#stream !== undefined) return Promise.resolve(this.#stream);
    this.#opening ??= this.#host.leases.leaseKeepAlive(this.#host.stream()).then(
      (stream) => {
        this.#opening = undefined;
        if (!this.alive) {
          endQuietly(stream);
          throw new Error("the session lease is lost");
        }
        this.#stream = stream;
        stream
          .on("data", (reply) => {
            if (this.#stream === stream) this.#onReply(reply);
          })
          .on("error", (error) => {
            if (this.#stream === stream) this.#reset(error);
          })
          .on("end", () => {
            if (this.#stream === stream) this.#reset(new Error("the keepalive stream ended"));
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
    const pending = this.#pending.shift();
    if (pending === undefined) return;
    if (!(Number(reply.TTL) > 0)) {
      const error = new Error("etcd no longer knows the session lease (revoked or expired)");
      pending.reject(error);
      this.#lose("the session lease was revoked or expired on the server", error);
      return;
    }
    if (pending.sentAt > this.#confirmedSentAt) {
      this.#confirmedSentAt = pending.sentAt;
      this.#armLoss();
    }
    pending.resolve();
    this.#armReply();
  }

  /**
   * Drops the stream and fails the keepalives waiting on it; the next one
   * opens a new stream. A broken stream is cancelled; a healthy one is ended
   * (`graceful`): etcd3 takes the error of a cancelled stream for a failure of
   * the member and resets every connection to it.
   */
  #reset(error: unknown, graceful = false): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream !== undefined) {
      if (graceful) endQuietly(stream);
      else cancelQuietly(stream);
    }
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) p.reject(error);
    if (this.#replyTimer !== undefined) clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
  }

  /** A keepalive that gets no reply in time resets the stream (a paused or partitioned server). */
  #armReply(): void {
    if (this.#replyTimer !== undefined) clearTimeout(this.#replyTimer);
    this.#replyTimer = undefined;
    const oldest = this.#pending[0];
    if (oldest === undefined) return;
    const timeout = this.#replyTimeout();
    this.#replyTimer = setTimeout(
      () => {
        this.#replyTimer = undefined;
        if (this.#pending[0] === oldest) {
          this.#reset(new Error(`no keepalive reply within ${Math.round(timeout)} ms`));
        } else {
          this.#armReply();
        }
      },
      Math.max(0, oldest.sentAt + timeout - monotonicNow()),
    );
    this.#replyTimer.unref();
  }

  /** Fires when the lease may have expired on the server: the last confirmed send + TTL. */
  #armLoss(): void {
    if (this.#lossTimer !== undefined) clearTimeout(this.#lossTimer);
    const at = this.#confirmedSentAt + this.ttlMs;
    this.#lossTimer = setTimeout(
      () => {
        this.#lossTimer = undefined;
        if (!this.alive) return;
        if (monotonicNow() >= this.#confirmedSentAt + this.ttlMs) {
          this.#lose("no keepalive of the session lease was confirmed within its TTL");
        } else {
          this.#armLoss();
        }
      },
      Math.max(0, Math.ceil(at - monotonicNow())),
    );
    this.#lossTimer.unref();
  }

  #lose(reason: string, cause?: unknown): void {
    if (!this.alive) return;
    this.#state = "lost";
    this.#stop(cause ?? new Error(reason));
    this.#host.sessionLost(this, reason, cause);
    // If the server still has it (we only presumed it lost), free its keys now.
    void this.#revoke();
  }

  #stop(error: unknown): void {
    for (const timer of [this.#beatTimer, this.#lossTimer, this.#replyTimer]) {
      if (timer !== undefined) clearTimeout(timer);
    }
    this.#beatTimer = this.#lossTimer = this.#replyTimer = undefined;
    this.#reset(error, true);
  }

  #revoke(): Promise<void> {
    this.#revoked ??= this.#host.leases
      .leaseRevoke({ ID: this.id }, this.#host.deadline(this.#host.requestTimeoutMs))
      .then(
        () => undefined,
        () => undefined, // unknown lease (already gone) or unreachable: it expires by itself
      );
    return this.#revoked;
  }
}

/** A failed keepalive is retried well within the TTL, so one lost reply does not cost the lease. */
function keepaliveBackoff(ttlMs: number): IBackoff<unknown> {
  return retryBackoff(Math.min(500, ttlMs / 4));
}

function endQuietly(stream: Stream): void {
  try {
    stream.end();
  } catch {
    // already closed
  }
}

function cancelQuietly(stream: Stream): void {
  try {
    stream.cancel();
  } catch {
    // already closed
  }
}
