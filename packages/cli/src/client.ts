import { createLocks, type Locks, MIN_TTL_MS } from "@locks/core";
import { validateKey } from "@locks/core/backend";
import type { Target } from "./args.js";
import { openBackend } from "./backends.js";
import { formatDuration } from "./duration.js";
import { say } from "./report.js";
import { UsageError } from "./usage-error.js";

/** How long `locks` waits for `close()` (release and disconnect) before it gives up and exits. */
const CLOSE_TIMEOUT_MS = 5_000;

/**
 * Opens the backend the target names and a `Locks` client over it, with
 * `ttlMs` (`--ttl`) as its lease time. The key is checked first, by the
 * core's rules: a bad one is refused before any connection is made.
 */
export async function openLocks(target: Target, ttlMs?: number): Promise<Locks> {
  validateKey(target.key);
  const backend = await openBackend(target.backend);
  try {
    // The core refuses it too, but names its own option (ttlMs); the floor is the backend's.
    const floor = Math.max(MIN_TTL_MS, backend.capabilities.minTtlMs ?? 0);
    if (ttlMs !== undefined && ttlMs < floor) {
      throw new UsageError(
        `--ttl ${formatDuration(ttlMs)} is shorter than ${formatDuration(floor)}, the shortest lease the ${backend.name} backend can honour`,
      );
    }
    return createLocks(backend, {
      ...(target.namespace === undefined ? {} : { namespace: target.namespace }),
      ...(ttlMs === undefined ? {} : { ttlMs }),
    });
  } catch (error) {
    await backend.close().catch(() => undefined);
    throw error;
  }
}

/**
 * Closes the client (releasing what it still holds), but never waits more
 * than a few seconds: a server that stopped answering must not keep a
 * finished command's `locks` alive. What is left frees itself after its TTL.
 */
export async function closeLocks(locks: Locks): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), CLOSE_TIMEOUT_MS);
  });
  try {
    const result = await Promise.race([locks.close().then(() => "closed" as const), timedOut]);
    if (result === "timeout") {
      say(
        `warning: the ${locks.backend.name} backend did not close within ${formatDuration(CLOSE_TIMEOUT_MS)}; a lock left behind frees itself after its TTL`,
      );
    }
  } catch (error) {
    say(`warning: closing the ${locks.backend.name} backend failed: ${(error as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}
