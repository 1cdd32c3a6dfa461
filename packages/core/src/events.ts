import { type Channel, channel } from "node:diagnostics_channel";
import type { LockMode } from "./backend.js";
import { monotonicNow } from "./clock.js";

/**
 * Names of the `node:diagnostics_channel` channels `@locks/core` publishes
 * on. Subscribe with `diagnostics_channel.subscribe(name, fn)`; with no
 * subscriber nothing is built or published.
 *
 * @group Observability
 */
export const LOCK_CHANNELS = {
  /** An acquire or tryAcquire began. Message: {@link AcquireEvent}. */
  acquireStart: "locks:acquire:start",
  /** The lock was granted; `waitMs` is the time since the start. */
  acquireGranted: "locks:acquire:granted",
  /** A tryAcquire found the key taken. */
  acquireBusy: "locks:acquire:busy",
  /** The acquire gave up after `timeoutMs`. */
  acquireTimeout: "locks:acquire:timeout",
  /** The acquire was aborted by its signal or by close(); `error` is the reason. */
  acquireAborted: "locks:acquire:aborted",
  /** The acquire failed otherwise (bad input, backend unavailable); `error` says why. */
  acquireFailed: "locks:acquire:failed",
  /** An extension (watchdog or `lease.extend()`) ended; `ok` says whether it succeeded. Message: {@link LeaseEvent}. */
  extend: "locks:extend",
  /** The lease was lost; `error` is the `LockLostError`. */
  lost: "locks:lost",
  /** The lease was released; `heldMs` is how long it was held. */
  release: "locks:release",
} as const;

/**
 * The message of every `locks:acquire:*` channel.
 *
 * @group Observability
 */
export interface AcquireEvent {
  readonly key: string;
  readonly namespace: string;
  /** The backend's name: "thread", "redis", ... */
  readonly backend: string;
  readonly mode: LockMode;
  readonly limit: number;
  /** Set on `granted`. */
  readonly fencingToken?: bigint;
  /** Milliseconds since the acquire began; set on every outcome. */
  readonly waitMs?: number;
  /** Set on `aborted` and `failed`. */
  readonly error?: unknown;
}

/**
 * The message of `locks:extend`, `locks:lost` and `locks:release`.
 *
 * @group Observability
 */
export interface LeaseEvent {
  readonly key: string;
  readonly namespace: string;
  readonly backend: string;
  readonly mode: LockMode;
  readonly fencingToken: bigint;
  /** Milliseconds since the grant. */
  readonly heldMs: number;
  /** `locks:extend`: whether the extension succeeded; `durationMs`: how long it took. */
  readonly ok?: boolean;
  readonly durationMs?: number;
  /** `locks:lost`: the `LockLostError`; `locks:extend`: the error of a failed extension. */
  readonly error?: unknown;
}

export const channels = Object.fromEntries(
  Object.entries(LOCK_CHANNELS).map(([name, id]) => [name, channel(id)]),
) as { readonly [K in keyof typeof LOCK_CHANNELS]: Channel };

const acquireChannels = Object.entries(channels)
  .filter(([name]) => name.startsWith("acquire"))
  .map(([, c]) => c);

/** True when anyone listens to an acquire channel: the only check on the hot path. */
export function observingAcquires(): boolean {
  for (const c of acquireChannels) if (c.hasSubscribers) return true;
  return false;
}

/** Publishes the outcome of an acquire once it settles; returns the same outcome. */
export function observeAcquire<T extends { readonly fencingToken: bigint } | null>(
  outcome: Promise<T>,
  base: Omit<AcquireEvent, "fencingToken" | "waitMs" | "error">,
  signal: AbortSignal | undefined,
): Promise<T> {
  const start = monotonicNow();
  if (channels.acquireStart.hasSubscribers) channels.acquireStart.publish(base);
  return outcome.then(
    (lease) => {
      const waitMs = monotonicNow() - start;
      if (lease === null) {
        if (channels.acquireBusy.hasSubscribers) channels.acquireBusy.publish({ ...base, waitMs });
      } else if (channels.acquireGranted.hasSubscribers) {
        channels.acquireGranted.publish({ ...base, waitMs, fencingToken: lease.fencingToken });
      }
      return lease;
    },
    (error: unknown) => {
      const waitMs = monotonicNow() - start;
      const code = (error as { code?: unknown } | null)?.code;
      const aborted =
        code === "LOCK_CLOSED" || (signal?.aborted === true && error === signal.reason);
      const target =
        code === "LOCK_TIMEOUT"
          ? channels.acquireTimeout
          : aborted
            ? channels.acquireAborted
            : channels.acquireFailed;
      if (target.hasSubscribers) target.publish({ ...base, waitMs, error });
      throw error;
    },
  );
}
