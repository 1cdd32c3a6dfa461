import * as fs from "node:fs";
import { join } from "node:path";
import { type HolderStatus, type LockRequest, limitMismatch } from "@locks/core/backend";
import type { FenceState } from "./fence.js";
import { errorCode, type Io, unless } from "./io.js";
import type { KeyFiles } from "./names.js";
import { parseRecord } from "./record.js";
import { wallClockLeft } from "./staleness.js";
import type { Store } from "./store.js";

/**
 * Shared-mode and semaphore holders are entries of the key's registry
 * directory, `<stem>.h/<owner>.<kind>.<staleMs>`: one symlink per holder,
 * whose target is the record its holder put in the gate to join (token,
 * label: see record.ts), created with it atomically, and whose own mtime
 * proper-lockfile keeps fresh like any lock's. An entry is added only while
 * the gate is held (so admission decisions are serialised), and removed by
 * its holder at any time, or by a gate holder once it is stale. Its name is
 * unique to its holder, so removing it by path can never hit someone else's.
 *
 * An exclusive holder holds the gate and admits no live entry. A registrant
 * holds the gate only while it joins, and checks after joining that it still
 * held the gate (a registrant paused past its staleness, whose gate was taken
 * over, removes its entry again): a writer that took the gate either sees the
 * entry or makes that check fail.
 */
export interface RegistryEntry {
  readonly owner: string;
  /** "s": shared; otherwise the semaphore limit it was admitted under. */
  readonly kind: "shared" | "semaphore";
  /** The limit it was admitted under: 1 for a shared holder. */
  readonly limit: number;
  readonly staleMs: number;
}

export function registryEntryName(
  request: Wanted & Pick<LockRequest, "owner">,
  staleMs: number,
): string {
  return `${request.owner}.${request.mode === "shared" ? "s" : `n${request.limit}`}.${staleMs}`;
}

export function parseRegistryEntry(name: string): RegistryEntry | undefined {
  const match = /^([0-9a-f]+)\.(s|n(\d+))\.(\d+)$/.exec(name);
  if (match === null) return undefined;
  return {
    owner: match[1]!,
    kind: match[2] === "s" ? "shared" : "semaphore",
    limit: match[3] === undefined ? 1 : Number(match[3]),
    staleMs: Number(match[4]),
  };
}

/**
 * Whether an exclusive holder must look at the registry. Every gate record
 * says whether the registry may be non-empty; a record that says so is
 * re-checked here (before taking the gate) so the flag clears itself once
 * the registry is empty. The fence cannot change between this check and
 * the grant without the grant being retried (see gate.ts), and entries are
 * added only under the gate, so an empty registry stays empty.
 */
export async function registryMayHoldEntries(
  io: Io,
  files: KeyFiles,
  last: FenceState["record"],
): Promise<boolean> {
  if (last !== undefined && !last.registry) return false;
  if ((await io.lstatIfAny(files.registry)) === undefined) return false;
  const names = await unless(io.readdir(files.registry), ["ENOENT"], [] as string[]);
  return names.length > 0;
}

/**
 * Who asks, as decided under the gate: a writer (exclusive, limit 1), a
 * reader (shared, limit 1) or a semaphore holder (exclusive, limit > 1).
 */
export type Wanted = Pick<LockRequest, "mode" | "limit">;

export interface Admission {
  readonly admit: boolean;
  /** When refused: the soonest a live entry could become stale. */
  readonly retryAfterMs: number;
  /** Stale entries seen (and, unless `look`, removed). */
  readonly stale: number;
}

/**
 * Counts the live entries and decides whether `wanted` may join. Under the
 * gate, stale entries are removed. With `look`, nothing is changed: a
 * waiter checks whether trying is worth taking the gate, since taking and
 * handing it back wakes every other waiter of the key. Throws
 * `limitMismatch` when live holders took the key with another limit.
 */
export async function admit(
  store: Store,
  files: KeyFiles,
  wanted: Wanted,
  look = false,
): Promise<Admission> {
  const { io } = store;
  const live: RegistryEntry[] = [];
  let retryAfterMs = Number.POSITIVE_INFINITY;
  let stale = 0;
  for (const { path, entry, stats } of await readEntries(io, files)) {
    const verdict = store.freshness.judge(
      path,
      `${stats.ino}:${stats.mtimeMs}`,
      stats.mtimeMs,
      entry.staleMs,
    );
    if (verdict.stale) {
      stale++;
      if (look) continue;
      await removeEntryAt(io, path);
      store.freshness.forget(path);
      continue;
    }
    live.push(entry);
    retryAfterMs = Math.min(retryAfterMs, verdict.retryAfterMs);
  }
  if (stale > 0 && !look) await ringDoorbell(io, files);
  const other = live.find((e) => e.limit !== wanted.limit);
  if (other !== undefined) throw limitMismatch(wanted.limit, other.limit);
  const shared = live.filter((e) => e.kind === "shared").length;
  const counted = live.length - shared;
  let ok: boolean;
  if (wanted.limit > 1) ok = shared === 0 && counted < wanted.limit;
  else if (wanted.mode === "shared") ok = counted === 0;
  else ok = live.length === 0;
  return { admit: ok, retryAfterMs: ok ? 0 : retryAfterMs, stale };
}

/** One entry of the registry as read now. */
interface EntryState {
  readonly path: string;
  readonly entry: RegistryEntry;
  readonly stats: fs.Stats;
}

/** The registry's entries (names this backend writes), each with its stats; those removed meanwhile are left out. */
async function readEntries(io: Io, files: KeyFiles): Promise<EntryState[]> {
  if ((await io.lstatIfAny(files.registry)) === undefined) return [];
  const names = await unless(io.readdir(files.registry), ["ENOENT"], [] as string[]);
  const entries: EntryState[] = [];
  for (const name of names) {
    const entry = parseRegistryEntry(name);
    if (entry === undefined) continue;
    const path = join(files.registry, name);
    const stats = await io.lstatIfAny(path);
    if (stats !== undefined) entries.push({ path, entry, stats });
  }
  return entries;
}

/** Creates the entry `name`, a symlink to `record` (proper-lockfile's mkdir for a registry holder). */
export async function createEntry(
  io: Io,
  files: KeyFiles,
  name: string,
  record: string,
): Promise<void> {
  const path = join(files.registry, name);
  try {
    await io.symlink(record, path);
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error;
    await io.mkdir(files.registry, 0o700, true);
    await io.symlink(record, path);
  }
}

/** Removes the entry `name` and wakes the key's waiters. */
export async function removeEntry(io: Io, files: KeyFiles, name: string): Promise<void> {
  await removeEntryAt(io, join(files.registry, name));
  await ringDoorbell(io, files);
}

/**
 * Removes one entry by its path, which is unique to its holder; false when it
 * was gone already. A directory is an entry of an older version of this backend.
 */
async function removeEntryAt(io: Io, path: string): Promise<boolean> {
  try {
    return await unless(
      io.unlink(path).then(() => true),
      ["ENOENT"],
      false,
    );
  } catch (error) {
    const code = errorCode(error);
    if (code !== "EISDIR" && code !== "EPERM") throw error;
    return unless(
      io.rmdir(path).then(() => true),
      ["ENOENT", "ENOTEMPTY"],
      false,
    );
  }
}

export function removeEntrySync(files: KeyFiles, name: string): void {
  try {
    fs.unlinkSync(join(files.registry, name));
    fs.utimesSync(files.registry, new Date(), new Date());
  } catch {
    // already gone
  }
}

/**
 * The registry's live holders, for `inspect` (stale ones, by the wall
 * clock, are left out), and the highest limit among them.
 */
export async function registryHolders(
  io: Io,
  files: KeyFiles,
): Promise<{ holders: HolderStatus[]; limit: number | undefined }> {
  const holders: HolderStatus[] = [];
  let limit: number | undefined;
  for (const { path, entry, stats } of await readEntries(io, files)) {
    const left = wallClockLeft(stats.mtimeMs, entry.staleMs);
    if (left <= 0) continue;
    // EINVAL: a directory, an entry of an older version of this backend (no record).
    const raw = await unless(io.readlink(path), ["ENOENT", "EINVAL"], undefined);
    const record = raw === undefined ? undefined : parseRecord(raw);
    limit = Math.max(limit ?? 1, entry.limit);
    holders.push({
      holder: record?.holder,
      owner: entry.owner,
      mode: entry.kind === "shared" ? "shared" : "exclusive",
      fencingToken: record?.token ?? 0n,
      expiresInMs: left,
    });
  }
  return { holders, limit };
}

/**
 * Force-release of the registry: removes every entry, live or stale, and
 * wakes the key's waiters. No later grant can be below an evicted holder's
 * token: its record went to the fence when it left the gate after joining,
 * and a writer takes the gate only after that. Its next mtime refresh
 * finds its entry gone (`host.lost`), and its release removes nothing: the
 * name was unique to it. Resolves with the number of live holders evicted.
 */
export async function evictRegistry(store: Store, files: KeyFiles): Promise<number> {
  const { io } = store;
  const entries = await readEntries(io, files);
  let live = 0;
  for (const { path, entry, stats } of entries) {
    const removed = await removeEntryAt(io, path);
    store.freshness.forget(path);
    if (removed && wallClockLeft(stats.mtimeMs, entry.staleMs) > 0) live++;
  }
  if (entries.length > 0) await ringDoorbell(io, files);
  return live;
}

/**
 * Touches the registry directory: an attribute change of an entry of the
 * lock directory, which the directory watcher of every process reports.
 */
export async function ringDoorbell(io: Io, files: KeyFiles): Promise<void> {
  await unless(io.utimes(files.registry, new Date()), ["ENOENT"], undefined);
}
