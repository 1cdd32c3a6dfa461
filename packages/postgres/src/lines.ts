import { onAbort } from "@locks/core/backend";
import type { Connection } from "./connection.js";

/*
 * A wait in the server's queue costs a connection, and a client has at most
 * maxConnections. The waits of a key beyond what its connections can queue
 * line up here, in the client, behind its waits already in the server's
 * queue: they cost the server nothing while they wait, and each time one of
 * those waits ends (granted and released, or given up) its connection goes
 * to the next in line, which joins the server's queue. A key's line holds
 * nobody back: the server's queue is FIFO, so a waiter lined up behind the
 * client's own queued waiters could not be granted before them anyway.
 * When the client has no wait of the key left in the server's queue, the
 * line declines (the core polls, with LISTEN/NOTIFY).
 */

/** The next wait in line: handed a connection, or undefined to decline. */
type Next = (conn: Connection | undefined) => void;

interface Line {
  /** Connections of this client waiting for the key in the server's queue, or holding what they waited for. */
  active: number;
  /** Waits lined up for one of those connections, oldest first. */
  readonly waiting: Set<Next>;
}

/** The lines of one client, by key id. */
export class Lines {
  readonly #byKey = new Map<string, Line>();

  /** Counts a connection that starts waiting for `key` in the server's queue. */
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
   * wait of the key left in the server's queue. Rejects when `signal` aborts.
   */
  behind(key: string, signal: AbortSignal): Promise<Connection | undefined> {
    const line = this.#byKey.get(key);
    if (line === undefined || line.active === 0) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const next: Next = (conn) => {
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
   * (when free) to the next in line and returns true; false when the caller
   * keeps it. The last connection of a key declines the rest of the line.
   */
  leave(key: string, conn: Connection | undefined): boolean {
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
  handAny(conn: Connection): boolean {
    for (const line of this.#byKey.values()) if (this.#handTo(line, conn)) return true;
    return false;
  }

  #handTo(line: Line, conn: Connection): boolean {
    if (conn.dead || conn.waiting || conn.holds.size > 0) return false;
    const [next] = line.waiting;
    if (next === undefined) return false;
    line.waiting.delete(next);
    line.active++;
    next(conn);
    return true;
  }

  #tidy(key: string, line: Line): void {
    if (line.active === 0 && line.waiting.size === 0) this.#byKey.delete(key);
  }
}
