import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import {
  type Attempt,
  type Backend,
  backendUnavailable,
  type Capabilities,
  isLockError,
  type KeyStatus,
  type LockRequest,
  type LossReport,
  limitMismatch,
  lockClosed,
  scopedKey,
  type Unsubscribe,
} from "@locks/core";
import { bootId } from "./boot.js";
import {
  clearOwner,
  createGate,
  type GateGrant,
  inspectGate,
  removeGate,
  removeGateSync,
  verifyGate,
} from "./gate.js";
import { holdLockFile, type LockFileHooks, type ReleaseLockFile } from "./holding.js";
import { asyncIo, errorCode, type Io, syncIo, unless } from "./io.js";
import { type KeyFiles, keyFiles, OWNER_ENTRY_PREFIX } from "./names.js";
import type { ResolvedFileOptions } from "./options.js";
import { parseRecord } from "./record.js";
import {
  admit,
  createEntry,
  limitOf,
  parseRegistryEntry,
  registryEntryName,
  removeEntry,
  removeEntrySync,
  ringDoorbell,
  type Wanted,
} from "./registry.js";
import { Freshness } from "./staleness.js";
import { LOCKED, MIN_STALE_MS, RACED, type Store, scratchDirectory, staleFor } from "./store.js";
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

/** Keys whose file names are kept. */
const FILE_NAME_CACHE = 1_024;

/**
 * Rounds of one attempt: a stale gate claimed or a raced token is retried a
 * few times, each after a turn of the event loop. With synchronous I/O no
 * call of a round ever yields, so a caller that retries in a loop (a
 * `tryAcquire` loop, a store that refuses for ever) would otherwise starve
 * every timer and signal handler of the process.
 */
const MAX_ROUNDS = 4;

/** One lease this backend instance holds. */
interface Hold {
  readonly request: LockRequest;
  readonly files: KeyFiles;
  /** What must still exist for the lease to be held: its record in the gate, or its registry entry. */
  readonly evidence: string;
  /** proper-lockfile's release (stops the mtime refresh, then calls `remove`). */
  readonly release: ReleaseLockFile;
  /** Removes what this lease still owns, without proper-lockfile (after it gave the lock up). */
  readonly remove: () => Promise<void>;
  state: "held" | "ending";
  ended: Promise<void> | undefined;
  /** Frees the key when the lease is not extended within its TTL. */
  expiry: NodeJS.Timeout | undefined;
}

/** Where the loss of a hold is reported once the hold exists (proper-lockfile calls back later). */
interface HoldRef {
  hold?: Hold;
}

/** A held gate, before it becomes a lease (exclusive) or is handed back (after joining the registry). */
interface GateHold {
  readonly grant: GateGrant;
  readonly release: ReleaseLockFile;
  readonly remove: () => Promise<void>;
}

/** The `@locks/file` backend: see the package README for the protocol. */
export class FileBackend implements Backend {
  readonly name = "file";
  readonly capabilities: Capabilities = CAPABILITIES;
  readonly #options: ResolvedFileOptions;
  readonly #store: Store;
  readonly #watcher: DirectoryWatcher;
  readonly #holds = new Map<string, Hold>();
  readonly #listeners = new Set<(report: LossReport) => void>();
  /** Attempts made per request: the first creates speculatively, later ones look first. */
  readonly #attempts = new WeakMap<LockRequest, number>();
  /** File names of recently used keys (a SHA-256 and a few joins per acquire otherwise). */
  readonly #files = new Map<string, KeyFiles>();
  #ready: Promise<void> | undefined;
  #closed = false;
  #sequence = 0;

  constructor(options: ResolvedFileOptions) {
    this.#options = options;
    const io: Io = options.io === "sync" ? syncIo : asyncIo;
    const scratch = scratchDirectory(options.directory);
    this.#store = {
      io,
      directory: options.directory,
      scratch,
      boot: bootId(),
      freshness: new Freshness(),
      uniqueName: (owner) => `${owner}.${process.pid}-${++this.#sequence}`,
      scratchPath: (owner) => join(scratch, `${owner}.${process.pid}-${++this.#sequence}`),
    };
    this.#watcher = new DirectoryWatcher(options.directory, (entry) =>
      io.lstatIfAny(join(options.directory, entry)).then((stats) => stats === undefined),
    );
  }

  async tryAcquire(request: LockRequest): Promise<Attempt> {
    this.#assertOpen();
    const files = this.#filesOf(request);
    const attempt = (this.#attempts.get(request) ?? 0) + 1;
    this.#attempts.set(request, attempt);
    const exclusive = request.mode === "exclusive" && request.limit === 1;
    try {
      await this.#ensureDirectory();
      try {
        return exclusive
          ? await this.#tryExclusive(request, files, attempt)
          : await this.#tryRegistered(request, files);
      } catch (error) {
        // The lock directory was removed under us: make it again, once.
        if (errorCode(error) !== "ENOENT") throw error;
        this.#ready = undefined;
        await this.#ensureDirectory();
        return exclusive
          ? await this.#tryExclusive(request, files, attempt)
          : await this.#tryRegistered(request, files);
      }
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  async extend(request: LockRequest, ttlMs: number): Promise<boolean> {
    this.#assertOpen();
    const hold = this.#holds.get(request.owner);
    if (hold === undefined || hold.state !== "held") return false;
    let present: boolean;
    try {
      present = await unless(
        this.#store.io.lstat(hold.evidence).then(() => true),
        ["ENOENT"],
        false,
      );
    } catch (error) {
      throw this.#unavailable(error);
    }
    if (hold.state !== "held") return false;
    if (!present) {
      // Taken over after going stale: never extend another holder's lock.
      void this.#end(hold).catch(() => undefined);
      return false;
    }
    this.#arm(hold, ttlMs);
    return true;
  }

  async release(request: LockRequest): Promise<void> {
    const hold = this.#holds.get(request.owner);
    try {
      if (hold !== undefined) {
        await this.#end(hold);
        return;
      }
      // No hold: an attempt whose outcome is unknown, or a lease already ended. Owner-checked clean-up.
      const files = this.#filesOf(request);
      await clearOwner(this.#store, files, request.owner);
      if (request.mode === "shared" || request.limit > 1) {
        const name = registryEntryName(
          request.owner,
          request.mode,
          request.limit,
          staleFor(request.ttlMs),
        );
        const removed = await unless(
          this.#store.io.rmdir(join(files.registry, name)).then(() => true),
          ["ENOENT"],
          false,
        );
        if (removed) await ringDoorbell(this.#store.io, files);
      }
    } catch (error) {
      throw this.#unavailable(error);
    }
  }

  subscribe(request: LockRequest, onChange: () => void): Unsubscribe {
    this.#assertOpen();
    return this.#watcher.subscribe(this.#filesOf(request).stem, onChange);
  }

  // onLoss and close are arrow properties, so they keep working when called
  // through a wrapper (a Proxy that counts calls, instrumentation).
  readonly onLoss = (listener: (report: LossReport) => void): Unsubscribe => {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  };

  /**
   * Who holds the key: the exclusive holder in the gate, or the shared and
   * semaphore holders in the registry, each with its real mode, and the
   * limit they took the key with (a semaphore's holders have mode
   * "exclusive" and `limit` > 1).
   */
  async inspect(namespace: string, key: string): Promise<KeyStatus> {
    this.#assertOpen();
    const { io } = this.#store;
    const files = keyFiles(this.#options.directory, namespace, key);
    const holders: Array<KeyStatus["holders"][number]> = [];
    let limit: number | undefined;
    try {
      const names = await unless(io.readdir(files.gate), ["ENOENT"], [] as string[]);
      for (const name of names) {
        if (!name.startsWith(OWNER_ENTRY_PREFIX)) continue;
        const raw = await unless(io.readlink(join(files.gate, name)), ["ENOENT"], undefined);
        const stats = await unless(io.lstat(files.gate), ["ENOENT"], undefined);
        const record = raw === undefined ? undefined : parseRecord(raw);
        if (record === undefined || stats === undefined || record.purpose !== "x") continue;
        limit = 1;
        holders.push({
          owner: name.slice(OWNER_ENTRY_PREFIX.length).split(".")[0]!,
          mode: "exclusive",
          fencingToken: record.token,
          expiresInMs: Math.max(0, Math.round(record.staleMs - (Date.now() - stats.mtimeMs))),
        });
      }
      const entries = await unless(io.readdir(files.registry), ["ENOENT"], [] as string[]);
      for (const name of entries) {
        const entry = parseRegistryEntry(name);
        const stats = await unless(io.lstat(join(files.registry, name)), ["ENOENT"], undefined);
        if (entry === undefined || stats === undefined) continue;
        limit = Math.max(limit ?? 1, entry.limit);
        holders.push({
          owner: entry.owner,
          mode: entry.kind === "shared" ? "shared" : "exclusive",
          expiresInMs: Math.max(0, Math.round(entry.staleMs - (Date.now() - stats.mtimeMs))),
        });
      }
    } catch (error) {
      throw this.#unavailable(error);
    }
    return { held: holders.length > 0, ...(limit === undefined ? {} : { limit }), holders };
  }

  readonly close = async (): Promise<void> => {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.dispose();
    const ends = [...this.#holds.values()].map((hold) => this.#end(hold));
    const results = await Promise.allSettled(ends);
    this.#listeners.clear();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw this.#unavailable(failed.reason);
  };

  // --- exclusive: hold the gate --------------------------------------------

  async #tryExclusive(request: LockRequest, files: KeyFiles, attempt: number): Promise<Attempt> {
    const staleMs = staleFor(request.ttlMs);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (round > 0) await nextTurn();
      // A first attempt goes straight for the gate: losing costs one failed mkdir.
      const busy =
        round === 0 && attempt === 1
          ? undefined
          : await this.#look(files, staleMs, { mode: "exclusive" }, attempt > 1);
      if (busy !== undefined) return busy;
      const ref: HoldRef = {};
      const gate = await this.#takeGate(request, files, "x", staleMs, ref);
      if (gate === undefined) continue;
      if (gate.grant.registry) {
        // Shared or semaphore holders may be in: a writer waits until none is left.
        let admitted = false;
        let retryAfterMs = 0;
        try {
          const admission = await admit(this.#store, files, { mode: "exclusive" });
          admitted = admission.admit;
          retryAfterMs = admission.retryAfterMs;
        } finally {
          if (!admitted) await this.#giveBack(gate);
        }
        if (!admitted) return { granted: false, retryAfterMs };
      }
      ref.hold = this.#addHold(
        request,
        files,
        join(files.gate, gate.grant.entry),
        gate.release,
        gate.remove,
      );
      return { granted: true, fencingToken: gate.grant.token };
    }
    return { granted: false, retryAfterMs: 0 };
  }

  // --- shared and semaphore: join the registry under the gate ---------------

  async #tryRegistered(request: LockRequest, files: KeyFiles): Promise<Attempt> {
    const staleMs = staleFor(request.ttlMs);
    const wanted: Wanted =
      request.mode === "shared" ? { mode: "shared" } : { limit: request.limit };
    for (let round = 0; round < MAX_ROUNDS; round++) {
      if (round > 0) await nextTurn();
      // Always look first: taking the gate only to be refused by a full
      // registry would wake every waiter of the key for nothing.
      const busy = await this.#look(files, staleMs, wanted, true);
      if (busy !== undefined) return busy;
      const gate = await this.#takeGate(request, files, "g", staleMs, {});
      if (gate === undefined) continue;
      try {
        return await this.#join(request, files, staleMs, wanted, gate);
      } finally {
        await this.#giveBack(gate);
      }
    }
    return { granted: false, retryAfterMs: 0 };
  }

  async #join(
    request: LockRequest,
    files: KeyFiles,
    staleMs: number,
    wanted: Wanted,
    gate: GateHold,
  ): Promise<Attempt> {
    const { io } = this.#store;
    const admission = await admit(this.#store, files, wanted);
    if (!admission.admit) return { granted: false, retryAfterMs: admission.retryAfterMs };
    const name = registryEntryName(request.owner, request.mode, request.limit, staleMs);
    const path = join(files.registry, name);
    const ref: HoldRef = {};
    const hooks: LockFileHooks = {
      create: () => createEntry(io, files, name),
      remove: () => removeEntry(io, files, name),
      removeSync: () => removeEntrySync(files, name),
    };
    const release = await holdLockFile(io, `${path}#${this.#sequence++}`, path, hooks, (error) =>
      this.#compromised(ref, error),
    );
    // Joined while still holding the gate? If it was taken over meanwhile, a
    // writer may hold it without having seen this entry: leave again.
    const still = await unless(
      verifyGate(this.#store, files, gate.grant.entry).then(() => true),
      ["ENOENT"],
      false,
    );
    if (!still) {
      await release();
      return { granted: false, retryAfterMs: 0 };
    }
    ref.hold = this.#addHold(request, files, path, release, hooks.remove);
    return { granted: true, fencingToken: gate.grant.token };
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
  ): Promise<Attempt | undefined> {
    const state = await inspectGate(this.#store, files, staleMs);
    if (state.kind === "held") {
      // An exclusive holder took the key with limit 1: a semaphore's request differs.
      if (state.exclusive && limitOf(wanted) !== 1) throw limitMismatch(limitOf(wanted), 1);
      return { granted: false, retryAfterMs: state.retryAfterMs };
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
    ref: HoldRef,
  ): Promise<GateHold | undefined> {
    let grant: GateGrant | undefined;
    const remove = async (): Promise<void> => {
      if (grant !== undefined) await removeGate(this.#store, files, grant.entry);
    };
    const hooks: LockFileHooks = {
      create: async () => {
        grant = await createGate(this.#store, files, request.owner, purpose, staleMs);
      },
      remove,
      removeSync: () => {
        if (grant !== undefined) removeGateSync(files, grant.entry);
      },
      verify: () =>
        grant === undefined ? Promise.resolve() : verifyGate(this.#store, files, grant.entry),
    };
    let release: ReleaseLockFile;
    try {
      release = await holdLockFile(
        this.#store.io,
        `${files.gate}#${this.#sequence++}`,
        files.gate,
        hooks,
        (error) => this.#compromised(ref, error),
      );
    } catch (error) {
      const code = errorCode(error);
      if (code === LOCKED || code === RACED) return undefined;
      throw error;
    }
    if (grant === undefined) throw new Error("proper-lockfile granted a lock it did not create");
    return { grant, release, remove };
  }

  /** Hands back a gate held for a moment (joining the registry, or refused by it). */
  async #giveBack(gate: GateHold): Promise<void> {
    try {
      await gate.release();
    } catch (error) {
      // Compromised meanwhile: proper-lockfile has let go; remove what may still be ours.
      if (errorCode(error) !== "ERELEASED") throw error;
      await gate.remove();
    }
  }

  // --- leases ---------------------------------------------------------------

  #addHold(
    request: LockRequest,
    files: KeyFiles,
    evidence: string,
    release: ReleaseLockFile,
    remove: () => Promise<void>,
  ): Hold {
    const hold: Hold = {
      request,
      files,
      evidence,
      release,
      remove,
      state: "held",
      ended: undefined,
      expiry: undefined,
    };
    this.#holds.set(request.owner, hold);
    this.#arm(hold, request.ttlMs);
    return hold;
  }

  /** (Re)starts the TTL: a lease not extended in time is freed at once, not only once stale. */
  #arm(hold: Hold, ttlMs: number): void {
    if (hold.expiry !== undefined) clearTimeout(hold.expiry);
    hold.expiry = setTimeout(() => {
      hold.expiry = undefined;
      if (hold.state !== "held") return;
      this.#report(hold, "the lease's TTL passed without an extension");
      void this.#end(hold).catch(() => undefined);
    }, ttlMs);
    hold.expiry.unref();
  }

  /** proper-lockfile found the lock replaced or removed while refreshing it. */
  #compromised(ref: HoldRef, error: Error): void {
    const hold = ref.hold;
    if (hold === undefined || hold.state !== "held") return;
    this.#report(hold, "the lock file was taken over or removed (it went stale)", error);
    void this.#end(hold).catch(() => undefined);
  }

  #report(hold: Hold, reason: string, cause?: unknown): void {
    const report: LossReport = { owner: hold.request.owner, reason, cause };
    for (const listener of [...this.#listeners]) listener(report);
  }

  /** Ends a hold once (idempotent), removing only what it still owns. */
  #end(hold: Hold): Promise<void> {
    if (hold.ended !== undefined) return hold.ended;
    hold.state = "ending";
    if (hold.expiry !== undefined) clearTimeout(hold.expiry);
    hold.expiry = undefined;
    hold.ended = (async () => {
      try {
        await hold.release().catch(async (error: unknown) => {
          // Compromised: proper-lockfile already let go; remove what may still be ours.
          if (errorCode(error) !== "ERELEASED") throw error;
          await hold.remove();
        });
      } finally {
        if (this.#holds.get(hold.request.owner) === hold) this.#holds.delete(hold.request.owner);
      }
    })();
    return hold.ended;
  }

  // --- plumbing ---------------------------------------------------------------

  #filesOf(request: LockRequest): KeyFiles {
    const id = scopedKey(request.namespace, request.key);
    let files = this.#files.get(id);
    if (files === undefined) {
      files = keyFiles(this.#options.directory, request.namespace, request.key);
      if (this.#files.size >= FILE_NAME_CACHE) this.#files.clear();
      this.#files.set(id, files);
    }
    return files;
  }

  #ensureDirectory(): Promise<void> {
    this.#ready ??= (async () => {
      const { io } = this.#store;
      await io.mkdirp(this.#options.directory, this.#options.directoryMode);
      await io.mkdirp(this.#store.scratch, 0o700);
    })().catch((error: unknown) => {
      this.#ready = undefined;
      throw error;
    });
    return this.#ready;
  }

  #assertOpen(): void {
    if (this.#closed) throw lockClosed("file backend");
  }

  #unavailable(error: unknown): Error {
    if (isLockError(error)) return error;
    return backendUnavailable(this.name, error);
  }
}
