import { monotonicNow } from "@locks/core/backend";

/**
 * Decides when a lock whose holder stopped refreshing it may be taken over.
 *
 * proper-lockfile compares the lock's mtime with `Date.now()`. A wall-clock
 * step breaks that both ways: set back (its PR #109), a lock written before
 * the step looks fresh for the size of the step, so a crashed holder's lock
 * stays stuck; set forward, a live holder's lock looks stale at once.
 *
 * Here a lock is stale only when this process has itself watched it stay
 * unchanged (same inode, same mtime, same owner) on the monotonic clock:
 *
 * - for the holder's whole staleness period, whatever the wall clock says; or
 * - for a short confirmation period, when the wall clock also says that the
 *   mtime is older than the staleness period. Live holders refresh the mtime
 *   every second, so a confirmation of two refresh periods keeps a forward
 *   clock step from taking over a live lock, while a lock found long
 *   abandoned is taken over after the confirmation, not a whole period.
 */
export const CONFIRM_MS = 2_000;
const MAX_OBSERVATIONS = 4_096;

export interface Verdict {
  readonly stale: boolean;
  /** When not stale: the soonest it could become stale, in ms. */
  readonly retryAfterMs: number;
}

interface Observation {
  readonly id: string;
  readonly firstSeen: number;
}

export class Freshness {
  readonly #seen = new Map<string, Observation>();

  /**
   * Judges the lock at `path` whose current identity is `id` (inode, mtime
   * and owner) and whose mtime is `mtimeMs`.
   */
  judge(path: string, id: string, mtimeMs: number, staleMs: number): Verdict {
    const now = monotonicNow();
    let seen = this.#seen.get(path);
    if (seen === undefined || seen.id !== id) {
      seen = { id, firstSeen: now };
      this.#seen.delete(path);
      this.#seen.set(path, seen);
      if (this.#seen.size > MAX_OBSERVATIONS) {
        const oldest = this.#seen.keys().next().value;
        if (oldest !== undefined) this.#seen.delete(oldest);
      }
    }
    const watched = now - seen.firstSeen;
    const age = Date.now() - mtimeMs;
    const confirm = Math.min(staleMs, CONFIRM_MS);
    if (watched >= staleMs || (age >= staleMs && watched >= confirm)) {
      return { stale: true, retryAfterMs: 0 };
    }
    const byWatch = staleMs - watched;
    const byWallClock = Math.max(staleMs - age, confirm - watched);
    return { stale: false, retryAfterMs: Math.max(1, Math.ceil(Math.min(byWatch, byWallClock))) };
  }

  /** Forgets what was seen at `path` (it was freed or taken). */
  forget(path: string): void {
    this.#seen.delete(path);
  }
}

/**
 * For `inspect` and force-release, which take no lock and keep no
 * observation: the ms until a lock whose mtime is `mtimeMs` goes stale by the
 * wall clock (at most `staleMs`, for an mtime in the future); 0 or less once it has.
 */
export function wallClockLeft(mtimeMs: number, staleMs: number): number {
  return Math.min(staleMs, Math.round(staleMs - (Date.now() - mtimeMs)));
}
