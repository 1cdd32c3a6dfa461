import { onAbort } from "../abort.js";

/*
 * For a backend whose waits queue in the store (a lock queue, a blocking
 * GET_LOCK), each on a connection of its own, with at most so many
 * connections per client. The waits of a key beyond what its connections can
 * queue line up here, in the client, behind the client's waits of the key
 * already in the store's queue: they cost the store nothing while they wait,
 * and each time one of those waits ends (granted and released, or given up)
 * its connection goes to the next in line, which joins the store's queue. A
 * key's line holds nobody back: the store's queue is FIFO, so a waiter lined
 * up behind the client's own queued waiters could not be granted before them
 * anyway. When the client has no wait of the key left in the store's queue,
 * the line declines (the core polls).
 */

/** The next wait in line: handed a connection, or undefined to decline. */
type Next<Conn> = (conn: Conn | undefined) => void;

interface Line<Conn> {
  /** Connections of this client waiting for the key in the store's queue, or holding what they waited for. */
  active: number;
  /** Waits lined up for one of those connections, oldest first. */
  readonly waiting: Set<Next<Conn>>;
}

/**
 * The waits of one client lined up, by key, behind its own connections that
 * wait for (or hold) the key in the store's queue. `free(conn)` says whether
 * a connection whose wait or hold ended may go to the next in line (alive,
 * holding nothing else, the client not closing).
 *
 * @group Waiting
 */
export class QueueLines<Conn> {
  readonly #byKey = new Map<string, Line<Conn>>();
  readonly #free: (conn: Conn) => boolean;

  constructor(free: (conn: Conn) => boolean) {
    this.#free = free;
  }

  /** Counts a connection that starts waiting for `key` in the store's queue. */
  enter(key: string): void {
    const line = this.#byKey.get(key);
    if (line === undefined) this.#byKey.set(key, { active: 1, waiting: new Set() });
    else line.active++;
  }

  /** Waits already line up for `key`: a newcomer goes to the end of the line, not to an idle connection. */
  crowded(key: string): boolean {
    return (this.#byKey.get(key)?.waiting.size ?? 0) > 0;
  }

  /**
   * Lines up for a connection of `key`'s waits: resolves with one (counted as
   * waiting for `key`), or undefined at once or later when the client has no
   * wait of the key left in the store's queue. Rejects when `signal` aborts.
   */
  behind(key: string, signal: AbortSignal): Promise<Conn | undefined> {
    const line = this.#byKey.get(key);
    if (line === undefined || line.active === 0) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const next: Next<Conn> = (conn) => {
        stop();
        resolve(conn);
      };
      line.waiting.add(next);
      const stop = onAbort(signal, (reason) => {
        line.waiting.delete(next);
        this.#tidy(key, line);
        reject(reason);
      });
    });
  }

  /**
   * A connection's wait for `key`, or its hold of it, ended: hands `conn`
   * (when given and free) to the next in line and returns true; false when
   * the caller keeps it. The last connection of a key declines the rest of
   * the line.
   */
  leave(key: string, conn: Conn | undefined): boolean {
    const line = this.#byKey.get(key);
    if (line === undefined) return false;
    line.active--;
    const handed = conn !== undefined && this.#handTo(line, conn);
    if (line.active === 0) {
      for (const next of [...line.waiting]) next(undefined);
      line.waiting.clear();
    }
    this.#tidy(key, line);
    return handed;
  }

  /** Hands a free connection to the oldest line that waits for one; false when none does. */
  handAny(conn: Conn): boolean {
    for (const line of this.#byKey.values()) if (this.#handTo(line, conn)) return true;
    return false;
  }

  #handTo(line: Line<Conn>, conn: Conn): boolean {
    if (!this.#free(conn)) return false;
    const [next] = line.waiting;
    if (next === undefined) return false;
    line.waiting.delete(next);
    line.active++;
    next(conn);
    return true;
  }

  #tidy(key: string, line: Line<Conn>): void {
    if (line.active === 0 && line.waiting.size === 0) this.#byKey.delete(key);
  }
}
