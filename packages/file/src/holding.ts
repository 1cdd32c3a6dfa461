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
 * The prototype of every lock's adapter of one backend instance (one lock
 * directory): proper-lockfile caches its mtime-precision probe on the
 * adapter (see `shareProbe`), so it probes once per directory, not once per
 * lock, and two directories on file systems of different precision do not
 * share the result.
 */
export function lockFileBase(): object {
  return Object.create(ADAPTER) as object;
}

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

/** One lock's `fs` adapter for proper-lockfile: its state; the methods are `ADAPTER`'s. */
interface Adapter {
  readonly io: Io;
  readonly hooks: LockFileHooks;
  /** Set once granted: from then on each `stat` is a refresh's. */
  hold: LockFileHold | undefined;
  /** A refresh's `utimes` in flight. */
  touching: Promise<unknown>;
  /** The mtime proper-lockfile holds for the lock: the probe's, then each refresh's. */
  mtime: Date | undefined;
}

/** The mtime a gate's probe reports when precision is known: proper-lockfile only compares it with later `stat`s. */
const UNREAD = new Date(0);

const ADAPTER = {
  mkdir(this: Adapter, _path: string, done: Done): void {
    this.hooks.create().then(() => done(null), done);
  },
  /**
   * proper-lockfile stats the lock once when taken (the probe) and before each
   * refresh, to check that the mtime is still the one it set. A gate is ours
   * while its record is in it (`verify`, which sees a takeover), so its stats
   * are not read: the answer is the mtime proper-lockfile set, one syscall
   * less per grant. Except for the first probe of a directory (after a
   * `utimes`: it learns the file system's precision there) and for registry
   * entries (no `verify`: their own presence is the check).
   */
  stat(this: Adapter, path: string, done: StatDone): void {
    const known = this.hooks.verify !== undefined && (this.hold !== undefined || !this.mtime);
    if (known && this.hold === undefined) {
      this.mtime = UNREAD;
      done(null, { mtime: UNREAD } as Stats);
      return;
    }
    stillHeld(this)
      .then(() => (known ? ({ mtime: this.mtime } as Stats) : this.io.lstat(path)))
      .then((stats) => {
        this.mtime = stats.mtime;
        done(null, stats);
      }, done);
  },
  utimes(this: Adapter, path: string, _atime: Date, mtime: Date, done: Done): void {
    const touch = this.io.utimes(path, mtime).then(() => {
      this.mtime = mtime;
    });
    this.touching = touch.catch(() => undefined);
    touch.then(() => done(null), done);
  },
  rmdir(this: Adapter, _path: string, done: Done): void {
    // A refresh still in flight must land before the lock can change hands.
    this.touching.then(() => this.hooks.remove()).then(() => done(null), done);
  },
  rmdirSync(this: Adapter): void {
    this.hooks.removeSync();
  },
};

/** Names each lock uniquely in proper-lockfile's process-wide table. */
let sequence = 0;

/**
 * Takes the lock at `lockPath` with proper-lockfile, through an adapter
 * made from `base` (see `lockFileBase`). Its name in proper-lockfile's
 * process-wide table is unique per hold, so that one holder's release can
 * never reach another holder's entry.
 */
export async function holdLockFile(
  io: Io,
  base: object,
  lockPath: string,
  hooks: LockFileHooks,
  onCompromised: (hold: LockFileHold, error: Error) => void,
): Promise<LockFileHold> {
  const adapter = Object.create(base) as Adapter;
  Object.assign(adapter, { io, hooks, hold: undefined, touching: RESOLVED, mtime: undefined });
  const { lock } = properLockfile ?? (await loadProperLockfile());
  // A short, absolute name: proper-lockfile resolves it on every lock and unlock.
  const release = await lock(`/locks-file-hold/${++sequence}`, {
    realpath: false,
    lockfilePath: lockPath,
    stale: Number.POSITIVE_INFINITY,
    // The mtime refresh period: proper-lockfile's minimum.
    update: 1_000,
    retries: 0,
    fs: adapter,
    onCompromised: (error) => {
      if (adapter.hold !== undefined) onCompromised(adapter.hold, error);
    },
  });
  shareProbe(adapter, base);
  const hold = {
    evidence: lockPath,
    until: Number.POSITIVE_INFINITY,
    release,
    remove: hooks.remove,
  };
  adapter.hold = hold;
  return hold;
}

const RESOLVED: Promise<unknown> = Promise.resolve();

/**
 * Before each refresh, once held: rejects with ENOENT (proper-lockfile then
 * stops refreshing and calls onCompromised) when the hold's TTL passed or
 * the lock is no longer ours.
 */
async function stillHeld(adapter: Adapter): Promise<void> {
  const { hold } = adapter;
  if (hold === undefined) return;
  if (monotonicNow() >= hold.until) throw codedError("ENOENT", "the lease's TTL passed");
  await adapter.hooks.verify?.();
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
