import type { Attempt, LockRequest } from "@locks/core";
import type { Cancel } from "./cancel.js";
import type { Connection } from "./connection.js";
import { requestKeys } from "./keys.js";
import { DISINTEREST, INTEREST } from "./sql.js";

/*
 * Waiting by polling, woken by LISTEN/NOTIFY: for semaphores (a waiter
 * cannot queue for "any of N slots"), and for waits beyond maxConnections
 * or on a client the user gave.
 *
 * A poller takes its key's interest marker in shared mode (on the session,
 * before its next attempt) and LISTENs. A release tries to take the marker
 * exclusively in the same statement as the unlock: when that fails, somebody
 * polls, and it NOTIFYs (see RELEASE in sql.ts). So notifications cost
 * nothing when nobody waits, and a release between a poller's failed attempt
 * and its sleep is never missed: the poller announced itself before the attempt.
 * A session never conflicts with itself, so releases of this process wake
 * its own pollers directly. Polling, with backoff up to a second, stays the
 * fallback for a lost notification.
 */

const FIRST_POLL_MS = 25;
const MAX_POLL_MS = 1_000;
/** A releaser holds the marker for one statement: a poller that finds it taken retries this often. */
const INTEREST_ATTEMPTS = 50;

/** Local pollers by interest marker. */
export class Wakeups {
  readonly #watchers = new Map<string, Set<() => void>>();

  watch(id: string, wake: () => void): () => void {
    let set = this.#watchers.get(id);
    if (set === undefined) {
      set = new Set();
      this.#watchers.set(id, set);
    }
    set.add(wake);
    const watchers = set;
    return () => {
      watchers.delete(wake);
      if (watchers.size === 0 && this.#watchers.get(id) === watchers) this.#watchers.delete(id);
    };
  }

  wake(id: string): void {
    const set = this.#watchers.get(id);
    if (set !== undefined) for (const wake of [...set]) wake();
  }

  wakeAll(): void {
    for (const id of [...this.#watchers.keys()]) this.wake(id);
  }
}

/** What polling needs from the backend. */
export interface PollHost {
  readonly channel: string;
  readonly wakeups: Wakeups;
  /** The live session connection (reconnecting if needed). */
  session(): Promise<Connection>;
  /** One attempt on the session. */
  attempt(conn: Connection, request: LockRequest): Promise<Attempt>;
}

/** Polls until granted; rejects with `cancel.reason` once it aborts (after handing back a racing grant). */
export async function pollUntilGranted(
  host: PollHost,
  request: LockRequest,
  cancel: Cancel,
  handBack: (request: LockRequest) => Promise<void>,
): Promise<Attempt & { granted: true }> {
  const { interest } = requestKeys(request);
  const sleeper = new Sleeper(cancel);
  const unwatch = host.wakeups.watch(interest, sleeper.wake);
  let announcedOn: Connection | undefined;
  try {
    let delay = FIRST_POLL_MS;
    for (;;) {
      cancel.throwIfAborted();
      const session = await host.session();
      if (announcedOn !== session) {
        announcedOn = undefined;
        await listen(host, session);
        await announce(session, interest);
        announcedOn = session;
      }
      sleeper.reset();
      const attempt = await host.attempt(session, request);
      if (attempt.granted) {
        if (!cancel.aborted) return attempt;
        await handBack(request);
        cancel.throwIfAborted();
      }
      await sleeper.sleep(delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }
  } finally {
    unwatch();
    sleeper.dispose();
    if (announcedOn !== undefined && !announcedOn.dead) {
      await announcedOn.query(DISINTEREST, [interest]).catch(() => undefined);
    }
  }
}

async function listen(host: PollHost, session: Connection): Promise<void> {
  if (session.listening) return;
  session.listening = true;
  session.onNotification(host.channel, (payload) => host.wakeups.wake(payload));
  try {
    // An identifier cannot be a parameter: the channel is a validated name from the options.
    await session.query(`LISTEN "${host.channel}"`);
  } catch (error) {
    session.listening = false;
    throw error;
  }
}

async function announce(session: Connection, interest: string): Promise<void> {
  for (let i = 0; i < INTEREST_ATTEMPTS; i++) {
    const [row] = await session.query(INTEREST, [interest]);
    if (row?.ok === true) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  // Not announced: this poller relies on polling alone until the next attempt succeeds.
}

/** A sleep that ends early on a wake-up or on abort. */
class Sleeper {
  readonly #cancel: Cancel;
  #woken = false;
  #resolve: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #stopListening: () => void;

  constructor(cancel: Cancel) {
    this.#cancel = cancel;
    this.#stopListening = cancel.onAbort(() => this.wake());
  }

  readonly wake = (): void => {
    this.#woken = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const resolve = this.#resolve;
    this.#resolve = undefined;
    resolve?.();
  };

  /** Forgets wake-ups from before the attempt about to start. */
  reset(): void {
    this.#woken = false;
  }

  sleep(ms: number): Promise<void> {
    if (this.#woken || this.#cancel.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#timer = setTimeout(this.wake, ms);
    });
  }

  dispose(): void {
    this.#stopListening();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
