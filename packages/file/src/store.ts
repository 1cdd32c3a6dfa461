import type { Io } from "./io.js";
import type { Freshness } from "./staleness.js";

/** What the lock protocol needs from one backend instance. */
export interface Store {
  readonly io: Io;
  /** Where temp files are written before being renamed into place. */
  readonly scratch: string;
  readonly boot: string;
  readonly freshness: Freshness;
  /** A name unique to this process and call, starting with `owner`. */
  uniqueName(owner: string): string;
}

/** The scratch directory's name inside the lock directory. */
export const SCRATCH = ".tmp";

/** Shortest staleness: proper-lockfile refreshes every second, so a lock is stale only after two missed refreshes. */
export const MIN_STALE_MS = 2_000;

/** How long a holder's lock may go without an mtime refresh before it can be taken over. */
export function staleFor(ttlMs: number): number {
  return Math.max(Math.ceil(ttlMs), MIN_STALE_MS);
}

/** Error codes the protocol uses to say "not now" rather than "broken". */
export const LOCKED = "ELOCKED";
export const RACED = "ERACED";
