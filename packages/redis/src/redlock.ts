import {
  type Attempt,
  type Backend,
  type Capabilities,
  type HolderStatus,
  isLockError,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  LockError,
  type LockRequest,
  type Unsubscribe,
} from "@locks/core/backend";
import type { Connection } from "./connection.js";
import { type KeyLayout, keyLayout } from "./layout.js";
import { Notifications } from "./notifier.js";
import { scripts } from "./scripts.js";
import { MAX_INSTANCE_TIMEOUT_MS, MIN_INSTANCE_TIMEOUT_MS, REDLOCK_MIN_TTL_MS } from "./timing.js";
import { plainCause } from "./unavailable.js";
import {
  acquireKeys,
  capabilities,
  forceReleaseCall,
  holdKeys,
  parseAcquireReply,
  readStatus,
  releaseCall,
  releaseTag,
  wireMode,
  withLabel,
} from "./wire.js";

/** Settings of a Redlock backend. */
export interface RedlockSettings {
  readonly commandTimeoutMs: number;
  readonly instanceTimeoutMs: number | undefined;
}

/** A Redlock member: one independent server. */
type Member = Connection;

type Outcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: unknown };

/**
 * Redlock over N independent servers (the Redis docs' distributed lock): a
 * lock is granted when a majority (N/2+1) granted it, within its validity
 * time (TTL minus the time the attempt took minus the clock-drift allowance:
 * the core's own estimate, dated from the start of its attempt). A failed
 * attempt releases on every member it may have reached.
 *
 * Fencing: each member keeps its own counter, which its acquire script
 * increments. The token is the maximum over the granting majority plus the
 * increments, and is written back (raising each counter to it, while the
 * lock is still held there) to a majority before the grant is returned. Any
 * later majority overlaps that one in at least one member whose counter is at
 * least the token, so later tokens are greater, as long as members do not
 * lose data (a member restarted empty must stay down for a TTL, as Redlock
 * itself requires; and the overlap must not be only such members).
 */
export class RedlockBackend implements Backend<KeyLayout> {
  readonly name = "redis";
  // Majorities of a semaphore of limit k do not exclude each other: k+1 holders can each win a majority.
  readonly capabilities: Capabilities = capabilities(false, false, REDLOCK_MIN_TTL_MS);

  readonly #members: readonly Member[];
  readonly #quorum: number;
  readonly #settings: RedlockSettings;
  readonly #notifications: Notifications;

  constructor(connections: readonly Connection[], settings: RedlockSettings) {
    this.#settings = settings;
    this.#quorum = Math.floor(connections.length / 2) + 1;
    this.#members = connections;
    this.#notifications = new Notifications(connections);
  }

  async tryAcquire(request: LockRequest): Promise<Attempt<KeyLayout>> {
    const timeout = this.#instanceTimeout(request.ttlMs);
    // A clean-up of this request's last attempt, retried after this one's acquire, would delete it.
    for (const m of this.#members) m.cancelCleanUp(request.owner);
    const l = keyLayout(request);
    const mode = wireMode(request);
    const [x, ...held] = holdKeys(request, l);
    const keys = [x as string, l.fence, ...held];
    const n = this.#members.length;
    const q = this.#quorum;
    const granted: Array<{ member: Member; token: bigint }> = [];
    const refused: Array<{ member: Member; wait: number }> = [];
    const failed: Array<{ member: Member; error: unknown }> = [];
    /** Members whose holders took the key with another limit (only clients of another kind can). */
    const mismatched: unknown[] = [];
    // Decide as soon as the outcome is certain: a slow member does not hold up a majority.
    // '+' while waiters of this client listen for the key's releases (see the acquire script).
    const mark = this.#notifications.listening(l.channel) ? "+" : "";
    const args = withLabel([request.owner, mode, request.ttlMs, request.limit, mark], request);
    const pending = await this.#race(
      (m) =>
        m
          .run(scripts.acquire, acquireKeys(l), args, timeout)
          .then((reply) => parseAcquireReply(reply, request)),
      (member, outcome) => {
        const attempt = outcome.ok ? (outcome.value as Attempt) : undefined;
        if (!outcome.ok && isLockError(outcome.error, "INVALID_ARGUMENT")) {
          mismatched.push(outcome.error);
          refused.push({ member, wait: 0 });
        } else if (!outcome.ok) failed.push({ member, error: outcome.error });
        else if (attempt?.granted) granted.push({ member, token: attempt.fencingToken });
        else refused.push({ member, wait: attempt?.retryAfterMs ?? 0 });
        return granted.length >= q || refused.length > n - q || failed.length > n - q;
      },
    );

    if (granted.length >= q) {
      let token = 0n;
      for (const g of granted) if (g.token > token) token = g.token;
      // Members whose own increment reached the token already hold it; only the lagging ones are written.
      const lagging = granted.filter((g) => g.token < token);
      const writes = await Promise.all(
        lagging.map(({ member }) =>
          settle(
            member.run(scripts.fence, keys, [request.owner, mode, token.toString(), 0], timeout),
          ),
        ),
      );
      const written =
        granted.length - lagging.length + writes.filter((w) => w.ok && w.value === 1).length;
      if (written >= q) {
        // Members that grant after the decision are brought up to the token too (in the
        // background): a member that restarted empty catches up as soon as it takes part.
        for (const late of pending) {
          void late.outcome.then((outcome) => {
            const attempt = outcome.ok ? (outcome.value as Attempt) : undefined;
            if (!attempt?.granted || attempt.fencingToken >= token) return;
            const args = [request.owner, mode, token.toString(), 1];
            void late.member.run(scripts.fence, keys, args, timeout).catch(() => undefined);
          });
        }
        return { granted: true, fencingToken: token, hold: l };
      }
      // Lost while writing back (expired, or members failed): not a grant.
      await this.#releaseOn(request, l, this.#members);
      if (failed.length + writes.filter((w) => !w.ok).length > n - q) {
        throw this.#unavailable(failed.map((f) => f.error));
      }
      return { granted: false, retryAfterMs: jitter(timeout) };
    }

    // No majority: release wherever it may have been taken (granted, no reply, no reply yet).
    const touched = [
      ...granted.map((g) => g.member),
      ...failed.map((f) => f.member),
      ...pending.map((p) => p.member),
    ];
    if (touched.length > 0) await this.#releaseOn(request, l, touched);
    if (failed.length > n - q) throw this.#unavailable(failed.map((f) => f.error));
    // The holders on a majority took the key with another limit: waiting cannot help.
    if (mismatched.length > n - q) throw mismatched[0];
    // Some members were ours: most likely contenders split the members, and all of them are
    // releasing now. Retry after a short random delay, as the Redlock algorithm says.
    if (granted.length > 0) return { granted: false, retryAfterMs: jitter(Math.min(timeout, 50)) };
    // Otherwise the lock frees for us once enough of the refusing members free it.
    const waits = refused.map((r) => r.wait).sort((a, b) => a - b);
    return { granted: false, retryAfterMs: waits[Math.min(q, waits.length) - 1] ?? 0 };
  }

  async extend(request: LockRequest, l: KeyLayout, ttlMs: number): Promise<boolean> {
    const mode = wireMode(request);
    const n = this.#members.length;
    const q = this.#quorum;
    let extended = 0;
    let refused = 0;
    const errors: unknown[] = [];
    await this.#race(
      (m) =>
        m.run(
          scripts.extend,
          holdKeys(request, l),
          [request.owner, mode, ttlMs],
          this.#instanceTimeout(ttlMs),
        ),
      (_member, outcome) => {
        if (!outcome.ok) errors.push(outcome.error);
        else if (outcome.value === 1) extended++;
        else refused++;
        return extended >= q || refused > n - q || errors.length > n - q;
      },
    );
    if (extended >= q) return true;
    if (refused > n - q) return false;
    throw this.#unavailable(errors);
  }

  async release(request: LockRequest, hold: KeyLayout | undefined): Promise<void> {
    const l = hold ?? keyLayout(request);
    const outcomes = await this.#releaseOn(request, l, this.#members);
    const answered = outcomes.filter((o) => o.ok).length;
    // Members that did not answer drop the hold after its TTL (or when they are back, see releaseOn).
    if (answered < this.#quorum)
      throw this.#unavailable(outcomes.flatMap((o) => (o.ok ? [] : [o.error])));
  }

  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Promise<Unsubscribe> {
    return this.#notifications.subscribe(key, onChange);
  }

  /**
   * The holders a majority of members list. For each: the token most of them
   * report (the grant's, which a majority were raised to; ties: the highest),
   * and the time until fewer than a majority would still hold it (the
   * quorum-th longest of the members' times left). Needs a majority of
   * members to answer, else BACKEND_UNAVAILABLE.
   */
  async inspect(key: KeyRef): Promise<KeyStatus> {
    const timeout = this.#settings.commandTimeoutMs;
    const outcomes = await Promise.all(
      this.#members.map((m) => settle(readStatus(m, key, timeout))),
    );
    const reports = outcomes.flatMap((o) => (o.ok ? [o.value as KeyStatus] : []));
    if (reports.length < this.#quorum)
      throw this.#unavailable(outcomes.flatMap((o) => (o.ok ? [] : [o.error])));
    const seen = new Map<string, HolderStatus[]>();
    const limits = new Map<number, number>();
    for (const status of reports) {
      if (status.limit !== undefined) limits.set(status.limit, (limits.get(status.limit) ?? 0) + 1);
      for (const holder of status.holders) {
        const id = `${holder.mode}:${holder.owner}`;
        seen.set(id, [...(seen.get(id) ?? []), holder]);
      }
    }
    const holders = [...seen.values()]
      .filter((copies) => copies.length >= this.#quorum)
      .map((copies) => this.#agreed(copies));
    if (holders.length === 0) return { holders };
    // The limit the most members report (every Redlock holder takes a key with limit 1).
    const [limit] = [...limits].sort((a, b) => b[1] - a[1])[0] ?? [1];
    return { holders, limit };
  }

  /**
   * Frees the key on every member (one script each, never retried later: a
   * late retry could evict a later holder). A majority must answer: then no
   * evicted holder keeps a majority, so its extension is refused, and the
   * next grant's majority overlaps the members its token was written to, so
   * that grant's token is higher. Fewer: BACKEND_UNAVAILABLE (the members
   * reached are freed; one that did not answer may still run it when it is
   * back, or keep its holder until the TTL). True when any member held something.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    // Every member is a single server, and one tag for all: waiters wake once.
    const [keys, args] = forceReleaseCall(key, "publish", releaseTag());
    const timeout = this.#settings.commandTimeoutMs;
    const outcomes = await Promise.all(
      this.#members.map((m) => settle(m.run(scripts.forceRelease, keys, args, timeout))),
    );
    if (outcomes.filter((o) => o.ok).length < this.#quorum)
      throw this.#unavailable(outcomes.flatMap((o) => (o.ok ? [] : [o.error])));
    return outcomes.some((o) => o.ok && o.value === 1);
  }

  /** One holder as the members that list it agree (see `inspect`). */
  #agreed(copies: readonly HolderStatus[]): HolderStatus {
    const votes = new Map<bigint, number>();
    for (const c of copies) votes.set(c.fencingToken, (votes.get(c.fencingToken) ?? 0) + 1);
    const [fencingToken] = [...votes].sort((a, b) => b[1] - a[1] || (b[0] > a[0] ? 1 : -1))[0] ?? [
      0n,
    ];
    const left = copies.map((c) => c.expiresInMs ?? 0).sort((a, b) => b - a);
    const expiresInMs = left[Math.min(this.#quorum, left.length) - 1];
    return { ...(copies[0] as HolderStatus), fencingToken, expiresInMs };
  }

  async close(): Promise<void> {
    await Promise.all([this.#notifications.close(), ...this.#members.map((m) => m.close())]);
  }

  #instanceTimeout(ttlMs: number): number {
    return (
      this.#settings.instanceTimeoutMs ??
      Math.min(MAX_INSTANCE_TIMEOUT_MS, Math.max(MIN_INSTANCE_TIMEOUT_MS, Math.ceil(ttlMs / 10)))
    );
  }

  /**
   * Owner-checked release on `members`, resolved once a majority of all members
   * answered (or every one of `members` did); the others finish in the
   * background. A member that cannot be reached gets it once it is back
   * (within the TTL), unless the request attempts again first (see
   * `Connection.cancelCleanUp`).
   */
  async #releaseOn(
    request: LockRequest,
    l: KeyLayout,
    members: readonly Member[],
  ): Promise<Outcome[]> {
    // Every member is a single server: they all publish with PUBLISH, with one tag.
    const [keys, args] = releaseCall(request, l, "publish", false, releaseTag());
    const timeout = this.#instanceTimeout(request.ttlMs);
    const outcomes: Outcome[] = [];
    await this.#race(
      (m) => m.cleanUp(request.owner, scripts.release, keys, args, timeout, request.ttlMs),
      (_member, outcome) => {
        outcomes.push(outcome);
        return outcomes.filter((o) => o.ok).length >= this.#quorum;
      },
      members,
    );
    return outcomes;
  }

  /**
   * Runs `run` on every member of `members` at once and feeds each outcome to
   * `decided` as it arrives; resolves when `decided` returns true or every
   * member answered, with the members that had not answered yet (and their
   * outcomes to come).
   */
  #race(
    run: (member: Member) => Promise<unknown>,
    decided: (member: Member, outcome: Outcome) => boolean,
    members: readonly Member[] = this.#members,
  ): Promise<Array<{ member: Member; outcome: Promise<Outcome> }>> {
    return new Promise((resolve) => {
      const all = members.map((member) => ({ member, outcome: settle(run(member)) }));
      const pending = new Set(all);
      let done = all.length === 0;
      if (done) resolve([]);
      for (const entry of all) {
        void entry.outcome.then((outcome) => {
          pending.delete(entry);
          if (done) return;
          if (decided(entry.member, outcome) || pending.size === 0) {
            done = true;
            resolve([...pending]);
          }
        });
      }
    });
  }

  /**
   * BACKEND_UNAVAILABLE naming each member that failed and its plain cause
   * (`errors` are the members' own BACKEND_UNAVAILABLE errors, which name
   * them); `cause` is an AggregateError of the raw errors.
   */
  #unavailable(errors: readonly unknown[]): Error {
    const raw = errors.map((e) => (e instanceof LockError && e.cause !== undefined ? e.cause : e));
    const members = errors.map((e) =>
      e instanceof LockError
        ? e.message.replace(/^redis backend unavailable: /, "")
        : plainCause(e),
    );
    const summary = `fewer than ${this.#quorum} of ${this.#members.length} Redlock members reachable`;
    return new LockError(
      "BACKEND_UNAVAILABLE",
      `redis backend unavailable: ${summary}: ${members.join("; ")}`,
      { cause: new AggregateError(raw, summary) },
    );
  }
}

function settle(promise: Promise<unknown>): Promise<Outcome> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

/** A random delay so that contenders that split the members do not retry in lockstep. */
function jitter(ms: number): number {
  return Math.floor(Math.random() * Math.max(1, ms));
}
