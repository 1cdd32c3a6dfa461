import type { Stats } from "node:fs";
import { lock } from "proper-lockfile";
import type { Io } from "./io.js";

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

/** proper-lockfile's mtime refresh period (its minimum). */
export const REFRESH_MS = 1_000;

type Done = (error: Error | null) => void;
type StatDone = (error: Error | null, stats?: Stats) => void;

/**
 * Per `Io`, the prototype of every lock's adapter: proper-lockfile caches
 * its mtime-precision probe on the adapter (see `shareProbe`), so it probes
 * once, not once per lock.
 */
const bases = new WeakMap<Io, object>();

/** Releases a held lock (proper-lockfile's release function). */
export type ReleaseLockFile = () => Promise<void>;

/**
 * Takes the lock at `lockPath` with proper-lockfile. `file` only names the
 * lock in proper-lockfile's process-wide table: it must be unique per hold,
 * so that one holder's release can never reach another holder's entry.
 */
export async function holdLockFile(
  io: Io,
  file: string,
  lockPath: string,
  hooks: LockFileHooks,
  onCompromised: (error: Error) => void,
): Promise<ReleaseLockFile> {
  const base = bases.get(io) ?? {};
  bases.set(io, base);
  let held = false;
  let touching: Promise<unknown> = Promise.resolve();
  const adapter = Object.create(base, {
    mkdir: {
      value(_path: string, done: Done): void {
        hooks.create().then(() => done(null), done);
      },
    },
    stat: {
      value(path: string, done: StatDone): void {
        const checked = held && hooks.verify !== undefined ? hooks.verify() : Promise.resolve();
        checked.then(() => io.stat(path)).then((stats) => done(null, stats), done);
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
  const release = await lock(file, {
    realpath: false,
    lockfilePath: lockPath,
    stale: Number.POSITIVE_INFINITY,
    update: REFRESH_MS,
    retries: 0,
    fs: adapter,
    onCompromised,
  });
  held = true;
  shareProbe(adapter, base);
  return release;
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
