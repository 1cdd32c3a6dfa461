import type { Stats } from "node:fs";
import { monotonicNow } from "@locks/core/backend";
import { codedError, errorCode, type Io } from "./io.js";

type ProperLockfile = typeof import("proper-lockfile");
let properLockfile: ProperLockfile | undefined;

/**
 * proper-lockfile, loaded on the first hold: a process that only inspects,
 * releases by force or never acquires (`locks status`) does not pay for it,
 * nor for the exit and signal handlers it installs when loaded.
 */
async function loadProperLockfile(): Promise<ProperLockfile> {
  properLockfile ??= await import("proper-lockfile");
  return properLockfile;
}

/**
 * How a lock is held through proper-lockfile. proper-lockfile does what it
 * is good at: it takes the lock with one atomic call, refreshes the lock's
 * mtime every second while it is held, notices when the lock was replaced
 * or removed (`onCompromised`), and removes held locks when the process
 * exits. What it does not do safely is delegated to these hooks, called
 * through the `fs` adapter it accepts:
 *
 * - `create` replaces its `mkdir`: the lock is created with its owner
 *   record already inside (see gate.ts);
 * - `remove` replaces its `rmdir`: only what this holder still owns is
 *   removed, never a lock someone else took over (its `unlock` removes the
 *   path blindly);
 * - `verify` runs before each mtime refresh: a refresh never touches a lock
 *   that is no longer ours.
 *
 * The hold's TTL is checked there too: a lock whose lease was not extended
 * in time is no longer refreshed and its hold ends (the store's TTL, while
 * its process lives; a dead process's lock goes stale instead).
 *
 * Its own stale-lock takeover is switched off (`stale: Infinity`): it removes
 * a lock it judged stale by path, which can delete a fresh lock (its issue
 * #121); staleness and takeover are handled by staleness.ts and gate.ts.
 */
export interface LockFileHooks {
  /** Creates the lock; rejects with code "ELOCKED" when it is held. */
  create(): Promise<void>;
  /** Removes what this holder still owns; resolves when there is nothing left of it. */
  remove(): Promise<void>;
  /** `remove`, synchronously (process exit). */
  removeSync(): void;
  /** Rejects with code "ENOENT" when the lock is no longer this holder's. */
  verify?(): Promise<void>;
}

type Done = (error: Error | null) => void;
type StatDone = (error: Error | null, stats?: Stats) => void;

/**
 * Per `Io`, the prototype of every lock's adapter: proper-lockfile caches
 * its mtime-precision probe on the adapter (see `shareProbe`), so it probes
 * once, not once per lock.
 */
const bases = new WeakMap<Io, object>();

/** A lock held through proper-lockfile: the backend's hold, passed back by the core. */
export interface LockFileHold {
  /** What must still exist for the lock to be held: its record in the gate, or its registry entry. */
  evidence: string;
  /**
   * A monotonic instant (the grant or last extension plus its `ttlMs`) after
   * which the mtime is no longer refreshed and the hold ends. Infinity until
   * granted, and for a gate held only while joining the registry.
   */
  until: number;
  /** Set once the hold ends (see `endHold`). */
  ended?: Promise<void>;
  /** proper-lockfile's release (stops the mtime refresh, then calls `remove`). */
  readonly release: () => Promise<void>;
  /** Removes what this hold still owns, without proper-lockfile (after it gave the lock up). */
  readonly remove: () => Promise<void>;
}

/** Names each lock uniquely in proper-lockfile's process-wide table. */
let sequence = 0;

/**
 * Takes the lock at `lockPath` with proper-lockfile. Its name in
 * proper-lockfile's process-wide table is unique per hold, so that one
 * holder's release can never reach another holder's entry.
 */
export async function holdLockFile(
  io: Io,
  lockPath: string,
  hooks: LockFileHooks,
  onCompromised: (hold: LockFileHold, error: Error) => void,
): Promise<LockFileHold> {
  const base = bases.get(io) ?? {};
  bases.set(io, base);
  let hold: LockFileHold | undefined;
  /**
   * Before each refresh, once held: rejects with ENOENT (proper-lockfile then
   * stops refreshing and calls onCompromised) when the hold's TTL passed or
   * the lock is no longer ours.
   */
  const stillHeld = async (): Promise<void> => {
    if (hold === undefined) return;
    if (monotonicNow() >= hold.until) {
      throw codedError("ENOENT", "the lease's TTL passed");
    }
    await hooks.verify?.();
  };
  let touching: Promise<unknown> = Promise.resolve();
  const adapter = Object.create(base, {
    mkdir: {
      value(_path: string, done: Done): void {
        hooks.create().then(() => done(null), done);
      },
    },
    stat: {
      value(path: string, done: StatDone): void {
        stillHeld()
          .then(() => io.lstat(path))
          .then((stats) => done(null, stats), done);
      },
    },
    utimes: {
      value(path: string, _atime: Date, mtime: Date, done: Done): void {
        const touch = io.utimes(path, mtime);
        touching = touch.catch(() => undefined);
        touch.then(() => done(null), done);
      },
    },
    rmdir: {
      value(_path: string, done: Done): void {
        // A refresh still in flight must land before the lock can change hands.
        touching.then(() => hooks.remove()).then(() => done(null), done);
      },
    },
    rmdirSync: {
      value(): void {
        hooks.removeSync();
      },
    },
  }) as object;
  const { lock } = properLockfile ?? (await loadProperLockfile());
  const release = await lock(`${lockPath}#${++sequence}`, {
    realpath: false,
    lockfilePath: lockPath,
    stale: Number.POSITIVE_INFINITY,
    // The mtime refresh period: proper-lockfile's minimum.
    update: 1_000,
    retries: 0,
    fs: adapter,
    onCompromised: (error) => {
      if (hold !== undefined) onCompromised(hold, error);
    },
  });
  shareProbe(adapter, base);
  hold = { evidence: lockPath, until: Number.POSITIVE_INFINITY, release, remove: hooks.remove };
  return hold;
}

/** Ends a hold once (idempotent), removing only what it still owns. */
export function endHold(hold: LockFileHold): Promise<void> {
  hold.ended ??= hold.release().catch(async (error: unknown) => {
    // Compromised: proper-lockfile already let go; remove what may still be ours.
    if (errorCode(error) !== "ERELEASED") throw error;
    await hold.remove();
  });
  return hold.ended;
}

/** Moves proper-lockfile's cached mtime-precision probe from one lock's adapter to the shared base. */
function shareProbe(adapter: object, base: object): void {
  for (const symbol of Object.getOwnPropertySymbols(adapter)) {
    if (!(symbol in base)) {
      Object.defineProperty(base, symbol, {
        value: (adapter as Record<symbol, unknown>)[symbol],
      });
    }
  }
}
