import { onAbort } from "./abort.js";
import type { LockRequest, Unsubscribe } from "./backend.js";
import { isLockError, lockClosed } from "./errors.js";
import type { Lease } from "./lease.js";
import { refuseUnknownOptions, validateSignal } from "./options.js";
import type { LockState } from "./state.js";
import { sleep } from "./toolkit/sleep.js";
import { Waker } from "./waker.js";

/**
 * Options of `Locks.election`.
 *
 * @group Leader election
 */
export interface ElectionOptions {
  /** This candidate's label (1 to 256 UTF-8 bytes), which `leader()` and `observe()` report. */
  holder?: string;
  /** Lease time of a term in ms (default: the client's `ttlMs`): how long a crashed leader keeps the key. */
  ttlMs?: number;
}

/**
 * Options of `Election.campaign`.
 *
 * @group Leader election
 */
export interface CampaignOptions {
  /** Gives up campaigning: the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** How long to wait to lead, in ms; rejects with `LOCK_TIMEOUT` after it. Default: wait forever. */
  timeoutMs?: number;
}

/**
 * Options of `Election.observe`.
 *
 * @group Leader election
 */
export interface ObserveOptions {
  /** Ends the iteration. */
  signal?: AbortSignal;
}

/**
 * Options of `Locks.lead`.
 *
 * @group Leader election
 */
export interface LeadOptions extends ElectionOptions {
  /** Stops leading and campaigning: the current term is released and `lead` returns. */
  signal?: AbortSignal;
}

/**
 * The leader of an election, as `leader()` and `observe()` report it.
 *
 * @group Leader election
 */
export interface Leader {
  /** The leader's label (`ElectionOptions.holder`), or undefined when it gave none. */
  readonly holder: string | undefined;
  /** The term number: the fencing token of the leader's lease. */
  readonly fencingToken: bigint;
}

/**
 * Leader election over one key (etcd's `Election`, Kubernetes' leader
 * election): the leader is the holder of the key, its term the lease.
 *
 * @group Leader election
 * @sortStrategy source-order
 */
export interface Election {
  /** The key elected over, without the namespace. */
  readonly key: string;
  /**
   * Resolves with a lease (the term) once this candidate leads. Release the
   * lease to resign; `term.signal` aborts when leadership is lost.
   */
  campaign(options?: CampaignOptions): Promise<Lease>;
  /** The current leader, or undefined when there is none. Takes no lock. */
  leader(): Promise<Leader | undefined>;
  /**
   * The current leader (or undefined), then each change of leader. Woken by
   * the backend's release notification where it has one, and by polling
   * every 250 ms. Ends when `signal` aborts; takes no lock.
   */
  observe(options?: ObserveOptions): AsyncIterableIterator<Leader | undefined>;
}

/** What an election needs from the client that made it. */
export interface ElectionHost {
  readonly closed: AbortSignal;
  acquire(key: string, options: CampaignOptions & ElectionOptions): Promise<Lease>;
  inspect(key: string): Promise<LockState>;
  /** Calls `onChange` when the key may have become free (the backend's notification); undefined without one. */
  watch(request: LockRequest, onChange: () => void): Promise<Unsubscribe | undefined>;
  request(key: string): LockRequest;
}

/** How often `observe` asks who leads, between notifications. */
const OBSERVE_POLL_MS = 250;
/** Back-off between campaigns of `lead` while the backend is unavailable: first and longest wait. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;

/** Validates `election` options before any I/O. */
export function validateElectionOptions(options: unknown, keys: readonly string[]): void {
  if (options === undefined) return;
  refuseUnknownOptions(options, new Set(keys));
  validateSignal((options as { signal?: unknown }).signal);
}

export const ELECTION_OPTIONS = ["holder", "ttlMs"] as const;
export const CAMPAIGN_OPTIONS = ["signal", "timeoutMs"] as const;
export const LEAD_OPTIONS = ["holder", "ttlMs", "signal"] as const;

/** @internal The one implementation of `Election`. */
export class KeyElection implements Election {
  readonly key: string;
  readonly #host: ElectionHost;
  readonly #options: ElectionOptions;

  constructor(host: ElectionHost, key: string, options: ElectionOptions) {
    this.#host = host;
    this.key = key;
    this.#options = options;
  }

  async campaign(options?: CampaignOptions): Promise<Lease> {
    validateElectionOptions(options, CAMPAIGN_OPTIONS);
    return this.#host.acquire(this.key, { ...this.#options, ...options });
  }

  async leader(): Promise<Leader | undefined> {
    const state = await this.#host.inspect(this.key);
    // The lowest token is the one that took the key first: the leader, were there ever two.
    const first = state.holders[0];
    return first === undefined
      ? undefined
      : { holder: first.holder, fencingToken: first.fencingToken };
  }

  async *observe(options?: ObserveOptions): AsyncIterableIterator<Leader | undefined> {
    validateElectionOptions(options, ["signal"]);
    const signal = options?.signal;
    const closed = this.#host.closed;
    // The waits' own sleep: it ends early on a notification, on close() and on the signal.
    const waker = new Waker(signal === undefined ? closed : AbortSignal.any([closed, signal]));
    const unsubscribe = await this.#host.watch(this.#host.request(this.key), waker.wake);
    try {
      let last: Leader | undefined | null = null;
      while (!signal?.aborted) {
        if (closed.aborted) throw lockClosed();
        waker.reset();
        const now = await this.leader();
        if (last === null || !sameLeader(now, last)) {
          last = now;
          yield now;
          continue;
        }
        await waker.sleep(OBSERVE_POLL_MS);
      }
    } finally {
      waker.dispose();
      await unsubscribe?.();
    }
  }
}

/**
 * `Locks.lead`: campaigns, runs `fn(term)` while leading, releases the term
 * when `fn` settles or leadership is lost, and campaigns again, until
 * `signal` aborts. A backend outage while campaigning is waited out (with
 * back-off); `fn` throwing while it still leads rejects `lead` (a bug in
 * `fn` should not be retried forever), after leadership was lost it does not.
 * It keeps the process alive until it returns.
 */
export async function leadLoop(
  election: Election,
  fn: (term: Lease) => unknown,
  signal: AbortSignal | undefined,
  closed: AbortSignal,
): Promise<void> {
  // A service that leads runs until told to stop: while `fn` waits on its term (whose timers are
  // unref'd), nothing else may keep a process over a socketless backend (file, thread) alive.
  const keepAlive = setInterval(() => {}, 2 ** 30);
  try {
    await leadTerms(election, fn, signal, closed);
  } finally {
    clearInterval(keepAlive);
  }
}

async function leadTerms(
  election: Election,
  fn: (term: Lease) => unknown,
  signal: AbortSignal | undefined,
  closed: AbortSignal,
): Promise<void> {
  let retryMs = RETRY_FIRST_MS;
  while (!signal?.aborted) {
    let term: Lease;
    try {
      term = await election.campaign(signal === undefined ? undefined : { signal });
      retryMs = RETRY_FIRST_MS;
    } catch (error) {
      if (signal?.aborted) return;
      if (!isLockError(error, "BACKEND_UNAVAILABLE")) throw error;
      // close() ends the pause; the next campaign then rejects with LOCK_CLOSED.
      const stopped = await sleep(
        retryMs,
        signal === undefined ? closed : AbortSignal.any([signal, closed]),
      ).then(
        () => false,
        () => true,
      );
      if (stopped && signal?.aborted) return;
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      continue;
    }
    // The caller's signal ends the term: fn sees it on term.signal.
    const stop = signal === undefined ? undefined : onAbort(signal, () => void term.release());
    try {
      await fn(term);
    } catch (error) {
      if (term.held && !signal?.aborted) throw error;
    } finally {
      stop?.();
      await term.release();
    }
  }
}

function sameLeader(a: Leader | undefined, b: Leader | undefined): boolean {
  return a?.fencingToken === b?.fencingToken && a?.holder === b?.holder;
}
