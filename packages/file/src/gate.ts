import * as fs from "node:fs";
import { join } from "node:path";
import type { HolderStatus, LockRequest } from "@locks/core/backend";
import { failpoints } from "./failpoints.js";
import { planToken, readFence, reserveThrough, type TokenPlan } from "./fence.js";
import { codedError, errorCode, type Io, unless } from "./io.js";
import { type KeyFiles, OWNER_ENTRY_PREFIX, ownerEntry, ownerPrefix } from "./names.js";
import { encodeRecord, type GrantRecord, parseRecord } from "./record.js";
import { registryMayHoldEntries } from "./registry.js";
import { wallClockLeft } from "./staleness.js";
import { LOCKED, RACED, type Store } from "./store.js";

/**
 * The gate of a key is a directory, `<stem>.lock`, created with `mkdir`
 * (atomic: one creator wins, the others fail at once with EEXIST), into which
 * its creator puts its record: a symlink `o-<owner>.<n>` whose target is the
 * record (token, staleness, boot id...), created atomically with its content
 * and never changed.
 *
 * - A gate holds exactly one record while held. For the microseconds between
 *   `mkdir` and the record, or a release's claim and `rmdir`, it is empty:
 *   busy, and stale like any lock if it stays so (its creator died), then
 *   removed with `rmdir`, which fails if a record has appeared meanwhile.
 * - Ending a hold (release or takeover) claims the record with one atomic call
 *   on its unique name: rename to `<stem>.fence` (which records the token) or
 *   unlink. Whoever comes second gets ENOENT and stops there. Then `rmdir`,
 *   which only removes an empty directory, so it can never remove a gate that
 *   another holder has taken in the meantime.
 * - A creator checks, after writing its record, that the gate holds its
 *   record alone. Two records meet when a creator's empty gate was removed
 *   between its `mkdir` and its record and another one created: it was paused
 *   past the staleness, or a force-release removed the empty gate, or a
 *   remover paused between judging an older empty gate abandoned and its
 *   `rmdir` hit this one. The late creator withdraws its record. However
 *   quick a creator was, it cannot skip this check: the removal is not its own.
 *
 * That is the guard against proper-lockfile's issue #121: a process paused
 * right before removing a stale lock, resuming after someone else took the
 * key, finds the stale record gone (ENOENT) and the fresh gate non-empty.
 */

/** A gate this holder now holds, as `createGate` left it. */
export interface GateGrant {
  readonly token: bigint;
  /** The registry of shared/semaphore holders may be non-empty: check it before holding exclusively. */
  readonly registry: boolean;
  /** The path of the holder's record inside the gate (its name is unique to this hold). */
  readonly path: string;
  /** The record itself (a registrant's registry entry carries it too). */
  readonly record: string;
}

/**
 * Creates the gate with the record of `request`'s owner (and label) inside,
 * or rejects with LOCKED (held) or RACED (this creation was overtaken: retry).
 */
export async function createGate(
  store: Store,
  files: KeyFiles,
  request: Pick<LockRequest, "owner" | "holder">,
  purpose: GrantRecord["purpose"],
  staleMs: number,
): Promise<GateGrant> {
  const { owner, holder } = request;
  const { io } = store;
  try {
    await io.mkdir(files.gate, 0o700);
  } catch (error) {
    if (errorCode(error) === "EEXIST") throw codedError(LOCKED, "the key is held");
    throw error;
  }
  const paused = failpoints.afterGateMade;
  if (paused !== undefined) await paused(files.gate);
  // The gate is ours and empty. The fence changes only when a record is
  // claimed, and no record can be claimed before ours is in: the fence read
  // now stays the last grant's until this hold ends.
  const entry = ownerEntry(store.uniqueName(owner));
  const path = join(files.gate, entry);
  let plan: TokenPlan;
  let registry: boolean;
  let fenceRaw: string | undefined;
  let record: string;
  try {
    const fence = await readFence(io, files);
    fenceRaw = fence.raw;
    plan = await planToken(io, files, fence, store.boot);
    registry = purpose === "g" || (await registryMayHoldEntries(io, files, fence.record));
    record = encodeRecord({
      token: plan.token,
      reserved: plan.reserved,
      boot: store.boot,
      staleMs,
      registry,
      pid: process.pid,
      purpose,
      holder,
    });
    await io.symlink(record, path);
  } catch (error) {
    // Our empty gate was removed as abandoned (we were paused past the staleness): not ours.
    if (errorCode(error) === "ENOENT") throw codedError(RACED, "the empty gate was removed");
    await removeEmptyGate(io, files);
    throw error;
  }
  try {
    // Ours alone? Another record here means another creator got this gate too
    // (an empty gate of one of us was removed between mkdir and symlink, and
    // made again), and it may already hold it: withdraw.
    const names = await unless(io.readdir(files.gate), ["ENOENT"], [] as string[]);
    if (names.length !== 1 || names[0] !== entry) {
      throw codedError(RACED, "another creator's record is in the gate");
    }
    // Alone now; and if another record shared the gate for a while and was
    // claimed since, the fence moved: withdraw too.
    if ((await unless(io.readlink(files.fence), ["ENOENT"], undefined)) !== fenceRaw) {
      throw codedError(RACED, "the fence moved while the gate was being taken");
    }
    if (plan.mustReserve) {
      const temp = join(store.scratch, store.uniqueName(owner));
      await reserveThrough(io, files, plan.token, store.boot, temp);
    }
  } catch (error) {
    await undoGate(store, files, entry);
    throw error;
  }
  return { token: plan.token, registry, path, record };
}

/** Gives back a gate whose record must not reach the fence (its token was never granted). */
export async function undoGate(store: Store, files: KeyFiles, entry: string): Promise<void> {
  await unless(store.io.unlink(join(files.gate, entry)), ["ENOENT"], undefined);
  await removeEmptyGate(store.io, files);
}

/** Ends a hold of the gate: its record (at `path`) goes to the fence, then the empty gate is removed. */
export async function removeGate(store: Store, files: KeyFiles, path: string): Promise<void> {
  const claimed = await unless(
    store.io.rename(path, files.fence).then(() => true),
    ["ENOENT"],
    false,
  );
  // Not ours any more (taken over, force-released): nothing of ours is left to remove.
  if (!claimed) return;
  await removeEmptyGate(store.io, files);
}

/** Removes the gate if it is empty: never one someone has put a record into meanwhile. */
function removeEmptyGate(io: Io, files: KeyFiles): Promise<void> {
  return unless(io.rmdir(files.gate), ["ENOENT", "ENOTEMPTY", "EEXIST"], undefined);
}

/** `removeGate`, synchronously, for proper-lockfile's exit handler. */
export function removeGateSync(files: KeyFiles, path: string): void {
  try {
    fs.renameSync(path, files.fence);
    fs.rmdirSync(files.gate);
  } catch {
    // Not ours any more (taken over), taken again meanwhile, or already gone.
  }
}

/**
 * Clean-up after an attempt whose outcome is unknown (it failed half-way):
 * claims any record of `owner` still in the gate, as a takeover would.
 */
export async function clearOwner(store: Store, files: KeyFiles, owner: string): Promise<void> {
  const names = await unless(store.io.readdir(files.gate), ["ENOENT", "ENOTDIR"], [] as string[]);
  const prefix = ownerPrefix(owner);
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const raw = await unless(store.io.readlink(join(files.gate, name)), ["ENOENT"], undefined);
    if (raw !== undefined && (await claimStale(store, files, name, parseRecord(raw)))) {
      await removeEmptyGate(store.io, files);
    }
  }
}

/** A held gate, as a contender found it in its way. */
export interface HeldGate {
  readonly retryAfterMs: number;
  /** Held by an exclusive holder (limit 1), not by a registrant joining the registry. */
  readonly exclusive: boolean;
}

/** A gate as read now: its directory's stats, every entry's name, and the owner records among them. */
interface GateState {
  readonly stats: fs.Stats;
  readonly names: readonly string[];
  readonly records: ReadonlyArray<{
    readonly name: string;
    readonly record: GrantRecord | undefined;
  }>;
  /** A record was claimed while the gate was read: what was read is already out of date. */
  readonly raced: boolean;
}

/** Reads the gate; undefined when there is none. */
async function readGate(io: Io, files: KeyFiles): Promise<GateState | undefined> {
  const stats = await io.lstatIfAny(files.gate);
  if (stats !== undefined && !stats.isDirectory()) {
    // Not a gate this backend made (a symlink, a file): mkdir would fail on it for ever, while a
    // dangling symlink reads as missing, so the key would look free and never be granted.
    throw codedError("EUNKNOWNLOCK", `${files.gate} is not a directory this backend made`);
  }
  const names =
    stats === undefined ? undefined : await unless(io.readdir(files.gate), ["ENOENT"], undefined);
  if (stats === undefined || names === undefined) return undefined;
  const records: Array<{ name: string; record: GrantRecord | undefined }> = [];
  let raced = false;
  for (const name of names) {
    if (!name.startsWith(OWNER_ENTRY_PREFIX)) continue;
    const raw = await unless(io.readlink(join(files.gate, name)), ["ENOENT"], undefined);
    if (raw === undefined) raced = true;
    else records.push({ name, record: parseRecord(raw) });
  }
  return { stats, names, records, raced };
}

/**
 * Looks at a gate that is in the way: missing (free: undefined), held and
 * fresh, or stale, in which case its record is claimed, the empty gate
 * removed, and the gate reported free. An empty gate is being created or
 * released: busy, judged with `staleMs` (whose record is unknown).
 */
export async function inspectGate(
  store: Store,
  files: KeyFiles,
  staleMs: number,
): Promise<HeldGate | undefined> {
  const gate = await readGate(store.io, files);
  // Gone, or claimed while we looked: look again on the next attempt.
  if (gate === undefined || gate.raced) {
    store.freshness.forget(files.gate);
    return undefined;
  }
  const { stats, names, records } = gate;
  const stale = Math.max(0, ...records.map((r) => r.record?.staleMs ?? staleMs)) || staleMs;
  const identity = `${stats.ino}:${stats.mtimeMs}:${names.join("/")}`;
  const verdict = store.freshness.judge(files.gate, identity, stats.mtimeMs, stale);
  if (!verdict.stale) {
    const exclusive = records.some((r) => r.record?.purpose === "x");
    return { retryAfterMs: verdict.retryAfterMs, exclusive };
  }
  if (records.length !== names.length) {
    const found = names.join(", ");
    throw codedError(
      "EUNKNOWNLOCK",
      `${files.gate} holds entries this backend did not write (${found})`,
    );
  }
  await failpoints.beforeClaim?.(files.gate);
  const claimed = await claimAll(store, files, records);
  failpoints.afterClaim?.(files.gate, claimed.length > 0 || records.length === 0);
  // Whoever claimed removes the gate, if empty.
  if (claimed.length > 0 || records.length === 0) await removeEmptyGate(store.io, files);
  store.freshness.forget(files.gate);
  return undefined;
}

/** The gate's exclusive holder, for `inspect`: none when the gate is free, joined through, or stale by the wall clock. */
export async function gateHolders(io: Io, files: KeyFiles): Promise<HolderStatus[]> {
  const gate = await readGate(io, files);
  if (gate === undefined) return [];
  const holders: HolderStatus[] = [];
  for (const { name, record } of gate.records) {
    const left = record === undefined ? 0 : wallClockLeft(gate.stats.mtimeMs, record.staleMs);
    if (record?.purpose !== "x" || left <= 0) continue;
    holders.push({
      holder: record.holder,
      owner: name.slice(OWNER_ENTRY_PREFIX.length).split(".")[0]!,
      mode: "exclusive",
      fencingToken: record.token,
      expiresInMs: left,
    });
  }
  return holders;
}

/**
 * Force-release of the gate: claims every record in it as a takeover does,
 * whatever its freshness, and removes the empty gate. The highest token
 * reaches the fence, so every later grant is above the evicted holder's; the
 * holder's own claim (release) then finds nothing, and its next mtime
 * refresh finds its record gone (`host.lost`). Resolves true when a live
 * exclusive holder was evicted.
 */
export async function evictGate(store: Store, files: KeyFiles): Promise<boolean> {
  const gate = await readGate(store.io, files);
  if (gate === undefined) return false;
  const live = gate.records.filter(
    (r) => r.record?.purpose === "x" && wallClockLeft(gate.stats.mtimeMs, r.record.staleMs) > 0,
  );
  const claimed = await claimAll(store, files, gate.records);
  if (claimed.length > 0 || gate.records.length === 0) await removeEmptyGate(store.io, files);
  store.freshness.forget(files.gate);
  return live.some((r) => claimed.includes(r.name));
}

/** Claims `records`, lowest token first so that the fence ends at the highest; resolves with the names claimed. */
async function claimAll(
  store: Store,
  files: KeyFiles,
  records: GateState["records"],
): Promise<string[]> {
  const claimed: string[] = [];
  for (const { name, record } of [...records].sort((a, b) => compareTokens(a.record, b.record))) {
    if (await claimStale(store, files, name, record)) claimed.push(name);
  }
  return claimed;
}

function compareTokens(a: GrantRecord | undefined, b: GrantRecord | undefined): number {
  const x = a?.token ?? -1n;
  const y = b?.token ?? -1n;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Claims a stale holder's record. Its token reaches the fence only when it
 * is higher than the fence (the holder may have died before its token was
 * validated); otherwise the record is just unlinked.
 */
async function claimStale(
  store: Store,
  files: KeyFiles,
  entry: string,
  record: GrantRecord | undefined,
): Promise<boolean> {
  const { io } = store;
  const fence = await readFence(io, files);
  const last = fence.record;
  const keep =
    record !== undefined &&
    !(last !== undefined && last.boot === record.boot && record.token <= last.token);
  const path = join(files.gate, entry);
  return unless(
    (keep ? io.rename(path, files.fence) : io.unlink(path)).then(() => true),
    ["ENOENT"],
    false,
  );
}
