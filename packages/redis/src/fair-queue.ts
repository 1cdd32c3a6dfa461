import { type LockRequest, onAbort } from "@locks/core/backend";
import type { KeyLayout } from "./layout.js";
import { type WireMode, wireMode } from "./wire.js";

/** The requests of this client in one key's queue on the server. */
interface KeyQueue {
  readonly layout: KeyLayout;
  /** Each request's queue member (mode letter + owner) and how it stops listening to its signal. */
  readonly requests: Map<LockRequest, { member: string; stopListening: () => void }>;
  /** How many of them a release's head notification (mode letter + 16 characters of owner) names. */
  readonly heads: Map<string, number>;
  readonly refresh: NodeJS.Timeout;
}

/**
 * The waiters of this client in the fair queues on the server, by key: what
 * keeps their queue entries alive, and tells which release notifications
 * concern them.
 *
 * Entries expire `waiterTtlMs` after their last refresh (a crashed waiter
 * blocks the queue that long at most). The entries of one key are refreshed
 * together, one command per key per client every third of that time, however
 * many wait: an idle waiter costs the server nothing of its own.
 */
export class FairQueue {
  readonly #byChannel = new Map<string, KeyQueue>();
  readonly #refreshMs: number;
  readonly #refresh: (layout: KeyLayout, members: string[]) => Promise<unknown>;

  constructor(
    waiterTtlMs: number,
    refresh: (layout: KeyLayout, members: string[]) => Promise<unknown>,
  ) {
    this.#refreshMs = Math.max(10, Math.floor(waiterTtlMs / 3));
    this.#refresh = refresh;
  }

  /** Whether `request` may have an entry in its key's queue. */
  has(request: LockRequest, layout: KeyLayout): boolean {
    return this.#byChannel.get(layout.channel)?.requests.has(request) === true;
  }

  /**
   * Registers `request`, which joins (or joined) the queue; `leave` runs
   * once if `signal` aborts before it is removed (granted or released).
   */
  join(request: LockRequest, layout: KeyLayout, signal: AbortSignal, leave: () => void): void {
    let queue = this.#byChannel.get(layout.channel);
    if (queue === undefined) {
      const refresh = setInterval(() => this.#refreshAll(layout.channel), this.#refreshMs);
      refresh.unref();
      queue = { layout, requests: new Map(), heads: new Map(), refresh };
      this.#byChannel.set(layout.channel, queue);
    }
    if (queue.requests.has(request)) return;
    const member = wireMode(request) + request.owner;
    const head = headOf(wireMode(request), request.owner);
    queue.heads.set(head, (queue.heads.get(head) ?? 0) + 1);
    const entry = { member, stopListening: noop };
    queue.requests.set(request, entry);
    entry.stopListening = onAbort(signal, () => {
      if (this.remove(request, layout)) leave();
    });
  }

  /** Forgets `request` (granted, released or gone); true when it was registered. */
  remove(request: LockRequest, layout: KeyLayout): boolean {
    const queue = this.#byChannel.get(layout.channel);
    const entry = queue?.requests.get(request);
    if (queue === undefined || entry === undefined) return false;
    queue.requests.delete(request);
    entry.stopListening();
    const head = headOf(wireMode(request), request.owner);
    const n = (queue.heads.get(head) ?? 1) - 1;
    if (n > 0) queue.heads.set(head, n);
    else queue.heads.delete(head);
    if (queue.requests.size === 0) {
      clearInterval(queue.refresh);
      this.#byChannel.delete(layout.channel);
    }
    return true;
  }

  /**
   * Whether a notification on `channel` concerns this client: a release
   * naming an exclusive head (`o` + mode letter + 16 characters of its
   * owner) only when that head waits here; anything else (a shared or
   * semaphore head, who may enter with others; a force-release) always.
   */
  concerns(channel: string, payload: string): boolean {
    if (payload[0] !== "o" || payload[1] !== "x") return true;
    return this.#byChannel.get(channel)?.heads.has(payload.slice(1)) === true;
  }

  /** Stops every refresh timer. */
  close(): void {
    for (const queue of this.#byChannel.values()) clearInterval(queue.refresh);
    this.#byChannel.clear();
  }

  #refreshAll(channel: string): void {
    const queue = this.#byChannel.get(channel);
    if (queue === undefined) return;
    const members = [...queue.requests.values()].map((e) => e.member);
    // A failed refresh is retried at the next interval (two more before the entries expire).
    this.#refresh(queue.layout, members).catch(() => undefined);
  }
}

/** How a release's notification names a queue head (see the scripts' wakeHead). */
function headOf(mode: WireMode, owner: string): string {
  return mode + owner.slice(0, 16);
}

function noop(): void {}
