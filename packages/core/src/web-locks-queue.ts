import type { LockMode } from "./backend.js";

/** What the local queue needs to know of a Web Locks request. */
export interface Queued {
  readonly name: string;
  readonly mode: LockMode;
}

/** One name's lock request queue and the requests granted under it. */
interface NameQueue<R> {
  readonly waiting: R[];
  readonly granted: Set<R>;
}

/**
 * The W3C "lock request queue map" and "held lock set" of one lock manager:
 * requests per name in FIFO order and the requests granted locally, with the
 * spec's "grantable" rule. It decides only the order within this manager;
 * the backend then gives exclusion between managers and processes.
 */
export class LocalQueues<R extends Queued> {
  readonly #names = new Map<string, NameQueue<R>>();
  /** Every granted request, in grant order (query() lists held locks in that order). */
  readonly #granted = new Set<R>();
  /** Every waiting request, in the order made (query() lists pending requests in that order). */
  readonly #waiting = new Set<R>();

  /** Appends `request` to its name's queue, or puts it first (a steal). */
  enqueue(request: R, first = false): void {
    const { waiting } = this.#queue(request.name);
    if (first) waiting.unshift(request);
    else waiting.push(request);
    this.#waiting.add(request);
  }

  /**
   * The spec's "grantable": nothing waits ahead of `request` (it may not be
   * queued at all, as for ifAvailable), and no granted request conflicts
   * with its mode (an exclusive one conflicts with any, a shared one with an
   * exclusive one).
   */
  grantable(request: R): boolean {
    const queue = this.#names.get(request.name);
    if (queue === undefined) return true;
    const first = queue.waiting[0];
    if (first !== undefined && first !== request) return false;
    if (request.mode === "exclusive") return queue.granted.size === 0;
    for (const granted of queue.granted) if (granted.mode === "exclusive") return false;
    return true;
  }

  /**
   * The spec's "process the lock request queue": takes the requests at the
   * head of `name`'s queue while they are grantable (so consecutive shared
   * requests are granted together) and counts them as granted.
   */
  grantNext(name: string): R[] {
    const queue = this.#names.get(name);
    const granted: R[] = [];
    if (queue === undefined) return granted;
    for (let next = queue.waiting[0]; next !== undefined; next = queue.waiting[0]) {
      if (!this.grantable(next)) break;
      queue.waiting.shift();
      this.#waiting.delete(next);
      queue.granted.add(next);
      this.#granted.add(next);
      granted.push(next);
    }
    this.#forgetIfIdle(name, queue);
    return granted;
  }

  /** Takes a waiting request out of its queue; false when it was not waiting. */
  withdraw(request: R): boolean {
    const queue = this.#names.get(request.name);
    const index = queue?.waiting.indexOf(request) ?? -1;
    if (queue === undefined || index < 0) return false;
    queue.waiting.splice(index, 1);
    this.#waiting.delete(request);
    this.#forgetIfIdle(request.name, queue);
    return true;
  }

  /** Ends a granted request (released, stolen or lost); false when it was not granted. */
  release(request: R): boolean {
    const queue = this.#names.get(request.name);
    if (queue === undefined || !queue.granted.delete(request)) return false;
    this.#granted.delete(request);
    this.#forgetIfIdle(request.name, queue);
    return true;
  }

  /** The requests granted under `name`, in grant order. */
  grantedOf(name: string): R[] {
    return [...(this.#names.get(name)?.granted ?? [])];
  }

  /** Every granted request, in grant order. */
  granted(): R[] {
    return [...this.#granted];
  }

  /** Every waiting request, in the order made. */
  waiting(): R[] {
    return [...this.#waiting];
  }

  #queue(name: string): NameQueue<R> {
    let queue = this.#names.get(name);
    if (queue === undefined) {
      queue = { waiting: [], granted: new Set() };
      this.#names.set(name, queue);
    }
    return queue;
  }

  #forgetIfIdle(name: string, queue: NameQueue<R>): void {
    if (queue.waiting.length === 0 && queue.granted.size === 0) this.#names.delete(name);
  }
}
