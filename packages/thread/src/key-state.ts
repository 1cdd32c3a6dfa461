import { limitMismatch, monotonicNow } from "@locks/core/backend";
import { registry } from "./registry.js";

/*
 * One key of the in-isolate lock table: who holds it and who waits, in
 * arrival order. The grant rule is async-mutex's weighted semaphore rule
 * (the head of the queue is served while it fits; nobody passes a head that
 * does not fit), written out here because async-mutex 0.5 cannot take a
 * single waiter out of its queue (see README, "How it works").
 */

/**
 * One live grant, and the backend's `hold` for it: the core passes it back to
 * extend and release, so nothing else needs to know who holds what.
 */
export class Hold {
  /** Position in `state.holds`, for O(1) removal. */
  index = -1;
  /** False once released or expired: nothing may act on it any more. */
  live = true;

  constructor(
    readonly state: KeyState,
    readonly owner: string,
    readonly shared: boolean,
    readonly fencingToken: bigint,
    /** Monotonic instant the store frees it; Infinity without TTL. */
    public deadline: number,
  ) {}
}

/** One queued blocking acquire. */
export interface Waiter {
  readonly shared: boolean;
  readonly limit: number;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  /** Called once, synchronously, when the waiter reaches the head and fits: it takes the key. */
  grant(state: KeyState): void;
  /**
   * Called once, synchronously, when the waiter reached the head while the key
   * is held with another limit: it rejects with `reason` (already unlinked).
   */
  refuse(reason: Error): void;
}

/** Holders and waiters of one key. Deleted from the registry as soon as it has neither. */
export class KeyState {
  /** Exclusive holders (more than one only for a semaphore). */
  exclusive = 0;
  /** Shared holders (readers). */
  shared = 0;
  /** Holds with a finite deadline (TTL). */
  expiring = 0;
  /** The limit the current holders took the key with (1 for readers); set by the first of them. */
  limit = 1;
  readonly holds: Hold[] = [];
  head: Waiter | undefined;
  tail: Waiter | undefined;
  /** Wakes the queue when the earliest holder's TTL passes (only while someone waits). */
  timer: NodeJS.Timeout | undefined;

  constructor(readonly id: string) {}
}

/** The state of `id`, created when missing. */
export function stateFor(id: string): KeyState {
  return registry.states.get(id) ?? createState(id);
}

/** A new, empty state for `id` (which has none). */
export function createState(id: string): KeyState {
  const state = new KeyState(id);
  registry.states.set(id, state);
  return state;
}

/** Whether a new holder of this mode and limit fits beside the current holders. */
export function fits(state: KeyState, shared: boolean, limit: number): boolean {
  return shared ? state.exclusive === 0 : state.shared === 0 && state.exclusive < limit;
}

/**
 * The limit of the key's live holders when it differs from `limit`, else
 * undefined. Holds whose TTL has passed do not count (they are freed at the
 * next dispatch); nothing is changed here.
 */
export function otherLimit(state: KeyState, limit: number): number | undefined {
  if (state.holds.length === 0 || state.limit === limit) return undefined;
  if (state.expiring === 0) return state.limit;
  const now = monotonicNow();
  for (const hold of state.holds) if (hold.deadline > now) return state.limit;
  return undefined;
}

/**
 * Whether the key can be granted now without passing anyone: nobody waits,
 * and the request fits once expired holds are freed.
 */
export function grantableNow(state: KeyState, shared: boolean, limit: number): boolean {
  if (state.head !== undefined) return false;
  if (fits(state, shared, limit)) return true;
  return state.expiring > 0 && reapExpired(state, monotonicNow()) && fits(state, shared, limit);
}

/** Records a new hold with the next fencing token of the isolate. */
export function take(
  state: KeyState,
  owner: string,
  shared: boolean,
  limit: number,
  deadline: number,
): Hold {
  const wanted = shared ? 1 : limit;
  if (state.limit !== wanted) {
    // A hold still listed took the key with another limit, so its TTL has passed
    // (a live one would have refused this request): free it before the limit changes.
    if (state.holds.length > 0) reapExpired(state, monotonicNow());
    state.limit = wanted;
  }
  registry.fence += 1n;
  const hold = new Hold(state, owner, shared, registry.fence, deadline);
  if (shared) state.shared++;
  else state.exclusive++;
  if (deadline !== Number.POSITIVE_INFINITY) state.expiring++;
  hold.index = state.holds.push(hold) - 1;
  return hold;
}

/** Ends a hold (release or expiry). The caller dispatches the queue afterwards. */
export function drop(hold: Hold): void {
  if (!hold.live) return;
  hold.live = false;
  const state = hold.state;
  if (hold.shared) state.shared--;
  else state.exclusive--;
  if (hold.deadline !== Number.POSITIVE_INFINITY) state.expiring--;
  const last = state.holds.pop()!;
  if (last !== hold) {
    state.holds[hold.index] = last;
    last.index = hold.index;
  }
  hold.index = -1;
}

/**
 * Frees every hold whose TTL has passed; true when one was freed. Nobody is
 * told: the core's own deadline for a lease ends before the store's, so its
 * watchdog has declared the lease lost already.
 */
export function reapExpired(state: KeyState, now: number): boolean {
  let freed = false;
  for (let i = state.holds.length - 1; i >= 0; i--) {
    const hold = state.holds[i]!;
    if (hold.deadline <= now) {
      drop(hold);
      freed = true;
    }
  }
  return freed;
}

/** Appends a waiter at the tail of the queue. */
export function enqueue(state: KeyState, waiter: Waiter): void {
  waiter.prev = state.tail;
  waiter.next = undefined;
  if (state.tail === undefined) state.head = waiter;
  else state.tail.next = waiter;
  state.tail = waiter;
  armExpiry(state);
}

/** Takes a waiter out of the queue (granted or gone). */
export function unlink(state: KeyState, waiter: Waiter): void {
  if (waiter.prev === undefined) state.head = waiter.next;
  else waiter.prev.next = waiter.next;
  if (waiter.next === undefined) state.tail = waiter.prev;
  else waiter.next.prev = waiter.prev;
  waiter.prev = undefined;
  waiter.next = undefined;
}

/**
 * After anything changed on a key: frees expired holds, serves the queue from
 * its head while the head fits (strict FIFO, so a waiting writer is never
 * passed by later readers), re-arms the expiry timer, and forgets the key
 * when nobody holds or waits for it.
 */
export function dispatch(state: KeyState): void {
  if (state.expiring > 0) reapExpired(state, monotonicNow());
  let waiter = state.head;
  while (waiter !== undefined) {
    if (state.holds.length > 0 && waiter.limit !== state.limit) {
      // Queued while no live holder had a limit (their TTL had passed), and
      // the key has since been taken with another limit: refuse, never wait
      // beside holders of another limit.
      unlink(state, waiter);
      waiter.refuse(limitMismatch(waiter.limit, state.limit));
    } else if (fits(state, waiter.shared, waiter.limit)) {
      unlink(state, waiter);
      waiter.grant(state);
    } else {
      break;
    }
    waiter = state.head;
  }
  armExpiry(state);
  forgetIfIdle(state);
}

/** Deletes the key from the registry when it has no holder and no waiter. */
export function forgetIfIdle(state: KeyState): void {
  if (state.holds.length === 0 && state.head === undefined) {
    if (state.timer !== undefined) clearTimeout(state.timer);
    state.timer = undefined;
    if (registry.states.get(state.id) === state) registry.states.delete(state.id);
  }
}

/**
 * Keeps a timer at the earliest holder deadline while someone waits, so the
 * queue moves when a TTL passes even if nobody releases. The timer is ref'd:
 * a waiting acquire keeps the process alive, as a pending socket read would.
 */
function armExpiry(state: KeyState): void {
  if (state.timer !== undefined) clearTimeout(state.timer);
  state.timer = undefined;
  if (state.head === undefined || state.expiring === 0) return;
  let earliest = Number.POSITIVE_INFINITY;
  for (const hold of state.holds) if (hold.deadline < earliest) earliest = hold.deadline;
  if (earliest === Number.POSITIVE_INFINITY) return;
  // +1: timers may fire up to a millisecond early against performance.now().
  const delay = Math.max(0, Math.ceil(earliest - monotonicNow()) + 1);
  state.timer = setTimeout(() => {
    state.timer = undefined;
    dispatch(state);
  }, delay);
}
