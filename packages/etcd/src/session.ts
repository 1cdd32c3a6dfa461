import { driftAllowance, Liveness, monotonicNow } from "@locks/core/backend";
import type { ILeaseKeepAliveResponse, LeaseClient } from "etcd3";
import { type CallOptions, endStream } from "./calls.js";

/** What a session needs from the backend that owns it. */
export interface SessionHost<M> {
  readonly leases: LeaseClient;
  /** Call options for one request (a keepalive's stream too): a deadline `ms` from now. */
  request(ms?: number): CallOptions;
  readonly requestTimeoutMs: number;
  /** The lease is gone, or may be: every key in it is lost. Called once. */
  sessionLost(session: Session<M>, reason: string, cause?: unknown): void;
}

/**
 * One etcd lease shared by every key a backend instance writes with one TTL
 * (etcd's "session"), kept alive by the toolkit's `Liveness`, which declares
 * it lost when no keepalive was confirmed within the TTL: at our own
 * deadline, not when etcd3 would tell (about 2x TTL late). Grants and
 * extensions may send a keepalive of their own (`confirmSince`), so the
 * session also knows the latest send time the server confirmed: the lease
 * cannot expire before that instant plus its TTL.
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
  /** The keepalive sent last, while it waits for its reply. */
  #latest: { readonly sentAt: number; readonly done: Promise<void> } | undefined;
  readonly #liveness: Liveness;
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

  /** True when a keepalive sent at or after `since` has been confirmed. */
  confirmedSince(since: number): boolean {
    return this.#confirmedSentAt >= since;
  }

  /**
   * Resolves once a keepalive sent at or after `since` has been confirmed
   * (at once when one already was); rejects when the keepalive fails.
   */
  confirmSince(since: number): Promise<void> {
    if (this.#confirmedSentAt >= since) return Promise.resolve();
    if (!this.alive) return Promise.reject(new Error("the session lease is lost"));
    const latest = this.#latest;
    return latest !== undefined && latest.sentAt >= since ? latest.done : this.#keepalive();
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
    this.#liveness.stop();
    this.#host.sessionLost(this, reason, cause);
    // If the server still has it (we only presumed it lost), free its keys now.
    void this.#revoke();
  }

  /** Stops the keepalive and revokes the lease: every key in it is deleted at once. */
  end(): Promise<void> {
    if (this.alive) this.#state = "ended";
    this.#liveness.stop();
    return this.#revoke();
  }

  /** One keepalive; resolves when the server confirmed it. */
  #keepalive(): Promise<void> {
    const sentAt = monotonicNow();
    const latest = { sentAt, done: this.#send() };
    this.#latest = latest;
    const settled = (): void => {
      if (this.#latest === latest) this.#latest = undefined;
    };
    latest.done.then(() => {
      this.#confirmedSentAt = Math.max(this.#confirmedSentAt, sentAt);
      settled();
    }, settled);
    return latest.done;
  }

  /**
   * Sends a keepalive on a stream of its own, bounded by a deadline: a
   * paused or partitioned server fails it in time for the next one to be
   * tried within the TTL. The healthy stream is then ended, not cancelled:
   * etcd3 takes the error of a cancelled stream for a failure of the member
   * and resets every connection to it.
   */
  async #send(): Promise<void> {
    if (!this.alive) throw new Error("the session lease is lost");
    const deadline = Math.min(this.#host.requestTimeoutMs, Math.max(250, this.ttlMs / 3));
    const stream = await this.#host.leases.leaseKeepAlive(this.#host.request(deadline));
    const reply = await new Promise<ILeaseKeepAliveResponse>((resolve, reject) => {
      stream
        .on("data", resolve)
        .on("error", reject)
        .on("end", () => reject(new Error("the keepalive stream ended")));
      stream.write({ ID: this.id });
    });
    endStream(stream);
    if (!(Number(reply.TTL) > 0)) {
      const error = new Error("etcd no longer knows the session lease (revoked or expired)");
      this.lose("the session lease was revoked or expired on the server", error);
      throw error;
    }
  }

  #revoke(): Promise<void> {
    this.#revoked ??= this.#host.leases.leaseRevoke({ ID: this.id }, this.#host.request()).then(
      () => undefined,
      () => undefined, // unknown lease (already gone) or unreachable: it expires by itself
    );
    return this.#revoked;
  }
}
