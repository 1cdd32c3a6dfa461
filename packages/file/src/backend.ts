import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import {
  type Attempt,
  type Backend,
  type BackendHost,
  type Capabilities,
  type KeyEvent,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  limitMismatch,
  monotonicNow,
  type Unsubscribe,
} from "@locks/core/backend";
import { bootId } from "./boot.js";
import {
  clearOwner,
  createGate,
  evictGate,
  type GateGrant,
  gateHolders,
  inspectGate,
  removeGate,
  removeGateSync,
} from "./gate.js";
import { endHold, holdLockFile, type LockFileHold, lockFileBase } from "./holding.js";
import { asyncIo, errorCode, type Io, syncIo } from "./io.js";
import { type KeyFiles, KeyNames } from "./names.js";
import type { ResolvedFileOptions } from "./options.js";
import {
  admit,
  createEntry,
  evictRegistry,
  registryEntryName,
  registryHolders,
  removeEntry,
  removeEntrySync,
  type Wanted,
} from "./registry.js";
import { Freshness } from "./staleness.js";
import { LOCKED, MIN_STALE_MS, RACED, SCRATCH, type Store, staleFor } from "./store.js";
import { DirectoryWatcher } from "./watcher.js";

const CAPABILITIES: Capabilities = Object.freeze({
  scope: "host",
  ttl: true,
  fencing: true,
  shared: true,
  semaphore: true,
  fair: false,
  notify: true,
  // The TTL is also the staleness after which other processes take a
  // crashed holder's key over, and that cannot be shorter than two missed
  // mtime refreshes (proper-lockfile refreshes once a second at the most,
  // and file systems with whole-second timestamps round to the second).
  // Below it, a crashed holder's key would stay held longer than its TTL.
  minTtlMs: MIN_STALE_MS,
});

/**
 * Rounds of one attempt: a stale gate claimed or a raced token is retried a
 * few times, each after a turn of the event loop. With synchronous I/O no
 * call of a round ever yields, so a caller that retries in a loop (a
 * `tryAcquire` loop, a store that refuses for ever) would otherwise starve
 * every timer and signal handler of the process.
 */
const MAX_ROUNDS = 4;

/** The `@locks/file` backend: see the package README for the protocol. */
export class FileBackend implements Backend<LockFileHold> {
  readonly name = "file";
  readonly capabilities: Capabilities = CAPABILITIES;
  readonly #options: ResolvedFileOptions;
  readonly #store: Store;
  readonly #watcher: DirectoryWatcher;
  readonly #names: KeyNames;
  /** Prototype of this instance's proper-lockfile adapters. */
  readonly #lockFiles = lockFileBase();
  /** Requests that made an attempt already: the first creates speculatively, later ones look first. */
  readonly #tried = new WeakSet<LockRequest>();
  #host: BackendHost<LockFileHold> | undefined;
  #ready: Promise<void> | undefined;
  #sequence = 0;

  constructor(options: ResolvedFileOptions) {
    this.#options = options;
    const io: Io = options.io === "sync" ? syncIo : asyncIo;
    this.#store = {
      io,
      scratch: join(options.directory, SCRATCH),
      boot: bootId(),
      freshness: new Freshness(),
      uniqueName: (owner) => `${owner}.${process.pid}-${++this.#sequence}`,
    };
    this.#watcher = new DirectoryWatcher(options.directory, io);
    this.#names = new KeyNames(options.directory);
  }

  bind(host: BackendHost<LockFileHold>): void {
    this.#host = host;
  }

  async tryAcquire(request: LockRequest): Promise<Attempt<LockFileHold>> {
    const files = this.#filesOf(request);
    const first = !this.#tried.has(request);
    this.#tried.add(request);
    await this.#ensureDirectory();
    try {
      return await this.#attempt(request, files, first);
    } catch (error) {
      // The lock directory was removed under us: make it again, once.
      if (errorCode(error) !== "ENOENT") throw error;
      this.#ready = undefined;
      await this.#ensureDirectory();
      return await this.#attempt(request, files, first);
    }
  }

  async extend(_request: LockRequest, hold: LockFileHold, ttlMs: number): Promise<boolean> {
    // Taken over after going stale: never extend another holder's lock.
    const present = await this.#store.io.lstatIfAny(hold.evidence);
    if (present === undefined || hold.ended !== undefined) return false;
    hold.until = monotonicNow() + ttlMs;
    return true;
  }

  async release(request: LockRequest, hold: LockFileHold | undefined): Promise<void> {
    if (hold !== undefined) return endHold(hold);
    // An attempt whose outcome is unknown: owner-checked clean-up.
    const files = this.#filesOf(request);
    await clearOwner(this.#store, files, request.owner);
    if (request.mode === "shared" || request.limit > 1) {
      await removeEntry(this.#store.io, files, registryEntryName(request, staleFor(request.ttlMs)));
    }
  }

  subscribe(key: KeyRef, onChange: (event?: KeyEvent) => void): Unsubscribe {
    return this.#watcher.subscribe(this.#filesOf(key).stem, onChange);
  }

  /**
   * Who holds the key, read from the files without taking anything: the
   * exclusive holder in the gate, or the shared and semaphore holders in the
   * registry, each with its label, real mode and token, and the limit they
   * took the key with (a semaphore's holders have mode "exclusive" and
   * `limit` > 1). A holder stale by the wall clock is left out.
   */
  async inspect(key: KeyRef): Promise<KeyStatus> {
    const files = this.#filesOf(key);
    const exclusive = await gateHolders(this.#store.io, files);
    const registry = await registryHolders(this.#store.io, files);
    const holders = [...exclusive, ...registry.holders];
    if (holders.length === 0) return { holders };
    return { holders, limit: registry.limit ?? 1 };
  }

  /**
   * Frees the key whoever holds it: the gate's record is claimed (to the
   * fence: later grants are higher), then every registry entry is removed.
   * The files' own events wake the waiters (the gate's removal, the
   * registry's doorbell), and each evicted holder learns of it at its next
   * mtime refresh, within a second. A registrant joining meanwhile either
   * finds its gate record claimed and leaves, or is granted first and evicted.
   */
  async forceRelease(key: KeyRef): Promise<boolean> {
    const files = this.#filesOf(key);
    const gate = await evictGate(this.#store, files);
    const registry = await evictRegistry(this.#store, files);
    return gate || registry > 0;
  }

  async close(): Promise<void> {
    this.#watcher.close();
  }

  // --- attempts ---------------------------------------------------------------

  /**
   * One attempt, in up to MAX_ROUNDS rounds. An exclusive holder holds the
   * gate; a shared or semaphore holder joins the registry while holding the
   * gate for a moment.
   */
  async #attempt(
    request: LockRequest,
    files: KeyFiles,
    first: boolean,
  ): Promise<Attempt<LockFileHold>> {
    const staleMs = staleFor(request.ttlMs);
    const exclusive = request.mode === "exclusive" && request.limit === 1;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (round > 0) await nextTurn();
      // A first exclusive attempt goes straight for the gate: losing costs one
      // failed mkdir. A registrant always looks first: taking the gate only to
      // be refused by a full registry would wake every waiter of the key for nothing.
      const busy =
        exclusive && first && round === 0
          ? undefined
          : await this.#look(files, staleMs, request, !exclusive || !first);
      if (busy !== undefined) return busy;
      const gate = await this.#takeGate(request, files, exclusive ? "x" : "g", staleMs);
      if (gate === undefined) continue;
      // No shared or semaphore holder can be in: the gate is the lock.
      if (exclusive && !gate.grant.registry) {
        return this.#granted(gate.hold, request.ttlMs, gate.grant.token);
      }
      let attempt: Attempt<LockFileHold> | undefined;
      try {
        attempt = await this.#admit(request, files, staleMs, gate);
        return attempt;
      } finally {
        // Held only to join, or by a writer that registry holders keep out.
        if (!exclusive || !attempt?.granted) await endHold(gate.hold);
      }
    }
    return { granted: false, retryAfterMs: 0 };
  }

  /** Under the gate: admits a writer once the registry is empty, or joins it. */
  async #admit(
    request: LockRequest,
    files: KeyFiles,
    staleMs: number,
    gate: { readonly hold: LockFileHold; readonly grant: GateGrant },
  ): Promise<Attempt<LockFileHold>> {
    const { io } = this.#store;
    const admission = await admit(this.#store, files, request);
    if (!admission.admit) return { granted: false, retryAfterMs: admission.retryAfterMs };
    if (request.mode === "exclusive" && request.limit === 1) {
      return this.#granted(gate.hold, request.ttlMs, gate.grant.token);
    }
    const name = registryEntryName(request, staleMs);
    const entry = join(files.registry, name);
    const hold = await holdLockFile(
      this.#store.io,
      this.#lockFiles,
      entry,
      {
        create: () => createEntry(io, files, name, gate.grant.record),
        remove: () => removeEntry(io, files, name),
        removeSync: () => removeEntrySync(files, name),
      },
      this.#compromised,
    );
    // Joined while still holding the gate? If it was taken over meanwhile, a
    // writer may hold it without having seen this entry: leave again. And
    // still in? A force-release may have removed the entry already.
    if (
      (await io.lstatIfAny(gate.grant.path)) === undefined ||
      (await io.lstatIfAny(entry)) === undefined
    ) {
      await endHold(hold);
      return { granted: false, retryAfterMs: 0 };
    }
    return this.#granted(hold, request.ttlMs, gate.grant.token);
  }

  /**
   * A look before trying, changing nothing (taking the gate, even in vain,
   * wakes every waiter of the key): the refusal when the gate is held or,
   * for a waiter, when the registry would refuse; undefined when trying is
   * worth it. A stale gate is claimed here (and reported free).
   */
  async #look(
    files: KeyFiles,
    staleMs: number,
    wanted: Wanted,
    waiting: boolean,
  ): Promise<Attempt<LockFileHold> | undefined> {
    const held = await inspectGate(this.#store, files, staleMs);
    if (held !== undefined) {
      // An exclusive holder took the key with limit 1: a semaphore's request differs.
      if (held.exclusive && wanted.limit !== 1) throw limitMismatch(wanted.limit, 1);
      return { granted: false, retryAfterMs: held.retryAfterMs };
    }
    if (!waiting) return undefined;
    const admission = await admit(this.#store, files, wanted, true);
    if (admission.admit || admission.stale > 0) return undefined;
    return { granted: false, retryAfterMs: admission.retryAfterMs };
  }

  /** Takes the gate through proper-lockfile; undefined when it is held or the attempt raced. */
  async #takeGate(
    request: LockRequest,
    files: KeyFiles,
    purpose: "x" | "g",
    staleMs: number,
  ): Promise<{ readonly hold: LockFileHold; readonly grant: GateGrant } | undefined> {
    let grant: GateGrant | undefined;
    let hold: LockFileHold;
    try {
      hold = await holdLockFile(
        this.#store.io,
        this.#lockFiles,
        files.gate,
        {
          create: async () => {
            grant = await createGate(this.#store, files, request, purpose, staleMs);
          },
          remove: async () => {
            if (grant !== undefined) await removeGate(this.#store, files, grant.path);
          },
          removeSync: () => {
            if (grant !== undefined) removeGateSync(files, grant.path);
          },
          // Rejects with ENOENT once the record is gone from the gate.
          verify: async () => {
            if (grant !== undefined) await this.#store.io.lstat(grant.path);
          },
        },
        this.#compromised,
      );
    } catch (error) {
      const code = errorCode(error);
      if (code === LOCKED || code === RACED) return undefined;
      throw error;
    }
    if (grant === undefined) throw new Error("proper-lockfile granted a lock it did not create");
    hold.evidence = grant.path;
    return { hold, grant };
  }

  // --- holds ------------------------------------------------------------------

  /** A hold becomes a lease: its TTL starts now. */
  #granted(hold: LockFileHold, ttlMs: number, fencingToken: bigint): Attempt<LockFileHold> {
    hold.until = monotonicNow() + ttlMs;
    return { granted: true, fencingToken, hold };
  }

  /** proper-lockfile stopped refreshing: the TTL passed, or the lock was taken over or removed. */
  readonly #compromised = (hold: LockFileHold, error: Error): void => {
    // Released meanwhile (a refresh in flight found its record gone): nothing was lost.
    if (hold.ended !== undefined) return;
    const reason =
      monotonicNow() >= hold.until
        ? "the lease's TTL passed without an extension"
        : "the lock file was taken over or removed (it went stale, or was force-released)";
    void endHold(hold).catch(() => undefined);
    this.#host?.lost(hold, reason, error);
  };

  // --- plumbing ---------------------------------------------------------------

  #filesOf(key: KeyRef): KeyFiles {
    return this.#names.of(key);
  }

  #ensureDirectory(): Promise<void> {
    this.#ready ??= (async () => {
      const { io } = this.#store;
      await io.mkdir(this.#options.directory, this.#options.directoryMode, true);
      await io.mkdir(this.#store.scratch, 0o700, true);
    })().catch((error: unknown) => {
      this.#ready = undefined;
      throw error;
    });
    return this.#ready;
  }
}
