/** A waiter of this process: the core's poller, or a fair acquire of this package. */
export interface Waiter {
  readonly owner: string;
  /** Wire mode: `x` exclusive, `r` shared, `s` semaphore slot. */
  readonly mode: "x" | "r" | "s";
  readonly limit: number;
  readonly wake: () => void;
}

interface Entry extends Waiter {
  readonly channel: string;
  /** Woken and not yet tried again: the wake is passed on if it leaves before trying. */
  pending: boolean;
}

/** How many recent notifications per channel are remembered to drop duplicates (Redlock publishes on every member). */
const RECENT = 8;

/**
 * The waiters of this backend instance, by channel, in arrival order, and the
 * policy of whom a release notification wakes. Waking every waiter would cost
 * one Redis command per waiter per handoff (a thundering herd); instead:
 *
 * - the key is free (`x`: the exclusive holder, or the last shared or
 *   semaphore holder, left): every shared waiter (they can all enter
 *   together) and the first other waiter (for a semaphore, as many as its limit);
 * - a semaphore slot freed (`s`): the first semaphore waiter;
 * - fair mode (`o` + head): only the waiter at the head of the server's queue,
 *   or all waiters of the key when the head is shared or a semaphore slot.
 *
 * A woken waiter that leaves before trying again passes its wake on. A
 * waiter that tried and lost sleeps until the next release: the winner will
 * release too. The core's bounded polling covers holders that crash.
 */
export class Waiters {
  readonly #byChannel = new Map<string, Map<string, Entry>>();
  readonly #byOwner = new Map<string, Entry>();
  readonly #recent = new Map<string, string[]>();

  get size(): number {
    return this.#byOwner.size;
  }

  add(channel: string, waiter: Waiter): void {
    const entry: Entry = { ...waiter, channel, pending: false };
    let list = this.#byChannel.get(channel);
    if (list === undefined) {
      list = new Map();
      this.#byChannel.set(channel, list);
    }
    list.set(waiter.owner, entry);
    this.#byOwner.set(waiter.owner, entry);
  }

  /** Removes a waiter; if it was woken and had not tried since, the next one is woken instead. */
  remove(owner: string): void {
    const entry = this.#byOwner.get(owner);
    if (entry === undefined) return;
    this.#byOwner.delete(owner);
    const list = this.#byChannel.get(entry.channel);
    list?.delete(owner);
    if (list !== undefined && list.size === 0) {
      this.#byChannel.delete(entry.channel);
      this.#recent.delete(entry.channel);
    }
    if (entry.pending && list !== undefined) this.#wakeFirst(list, () => true, 1);
  }

  /** Called when `owner` starts an attempt: its wake is used up. */
  consume(owner: string): void {
    const entry = this.#byOwner.get(owner);
    if (entry !== undefined) entry.pending = false;
  }

  /** Handles a release notification on `channel`. */
  dispatch(channel: string, payload: string): void {
    const list = this.#byChannel.get(channel);
    if (list === undefined || payload.length === 0) return;
    const kind = payload[0];
    if (kind === "o") {
      const head = payload.slice(1);
      for (const entry of list.values()) {
        if (entry.mode + entry.owner.slice(0, head.length - 1) === head) this.#wake(entry);
      }
      if (head[0] !== "x") for (const entry of list.values()) this.#wake(entry);
      return;
    }
    if (this.#duplicate(channel, payload)) return;
    if (kind === "s") {
      this.#wakeFirst(list, (e) => e.mode === "s", 1);
      return;
    }
    // The key is free: readers can all enter, plus the first exclusive waiter or semaphore's worth.
    for (const entry of list.values()) if (entry.mode === "r") this.#wake(entry);
    const first = this.#wakeFirst(list, (e) => e.mode !== "r", 1);
    if (first !== undefined && first.mode === "s") {
      this.#wakeFirst(list, (e) => e.mode === "s", first.limit - 1);
    }
  }

  /** Wakes every waiter (after a subscriber reconnect, when notifications may have been missed). */
  wakeAll(): void {
    for (const entry of this.#byOwner.values()) this.#wake(entry);
  }

  #wake(entry: Entry): void {
    entry.pending = true;
    entry.wake();
  }

  /** Wakes up to `count` waiters matching `test` that are not already woken; returns the first. */
  #wakeFirst(
    list: Map<string, Entry>,
    test: (entry: Entry) => boolean,
    count: number,
  ): Entry | undefined {
    let first: Entry | undefined;
    let left = count;
    for (const entry of list.values()) {
      if (left <= 0) break;
      if (entry.pending || !test(entry)) continue;
      this.#wake(entry);
      first ??= entry;
      left--;
    }
    return first;
  }

  #duplicate(channel: string, payload: string): boolean {
    let recent = this.#recent.get(channel);
    if (recent === undefined) {
      recent = [];
      this.#recent.set(channel, recent);
    }
    if (recent.includes(payload)) return true;
    recent.push(payload);
    if (recent.length > RECENT) recent.shift();
    return false;
  }
}
