import type { WakeRegistry } from "@locks/core/backend";
import type { WireMode } from "./wire.js";

/** A waiter of this process (the core's poller), registered by channel. */
export interface Waiter {
  readonly owner: string;
  readonly mode: WireMode;
  readonly limit: number;
  wake(): void;
}

/**
 * Wakes the waiters a release notification on `channel` concerns. Waking
 * every waiter would cost one Redis command per waiter per handoff (a
 * thundering herd); instead, by the payload's first letter:
 *
 * - `x`, the key is free (the exclusive holder, or the last shared or
 *   semaphore holder, left): every shared waiter (they can all enter
 *   together) and the first other waiter (for a semaphore, as many as its limit);
 * - `s`, one semaphore slot freed: the first semaphore waiter;
 * - `o` + head (fair mode): only the waiter at the head of the server's
 *   queue, or every waiter of the key when the head is shared or a semaphore slot.
 *
 * A waiter that tried and lost sleeps until the next release: the winner
 * will release too. The core's bounded polling covers holders that crash and
 * notifications that were missed.
 */
export function dispatch(waiters: WakeRegistry<Waiter>, channel: string, payload: string): void {
  waiters.wake(channel, (all) => {
    const kind = payload[0];
    if (kind === "o") {
      const head = payload.slice(1);
      if (head[0] !== "x") return all;
      return all.filter((w) => w.mode + w.owner.slice(0, head.length - 1) === head);
    }
    const slots = all.filter((w) => w.mode === "s");
    if (kind === "s") return slots.slice(0, 1);
    const first = all.find((w) => w.mode !== "r");
    const others = first?.mode === "s" ? slots.slice(0, first.limit) : first ? [first] : [];
    return [...all.filter((w) => w.mode === "r"), ...others];
  });
}
