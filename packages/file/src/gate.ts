import * as fs from "node:fs";
import { join } from "node:path";
import { failpoints } from "./failpoints.js";
import { planToken, readFence, reserveThrough } from "./fence.js";
import { errorCode, unless } from "./io.js";
import { type KeyFiles, OWNER_ENTRY_PREFIX, ownerEntry, ownerPrefix } from "./names.js";
import { encodeRecord, type GrantRecord, parseRecord } from "./record.js";
import { registryMayHoldEntries } from "./registry.js";
import { LOCKED, protocolError, RACED, type Store } from "./store.js";

/**
 * The gate of a key is a directory, `<stem>.lock`, that holds exactly one
 * entry while it is held: a symlink `o-<owner>` whose target is the holder's
 * record (token, staleness, boot id...).
 *
 * - Taking it: the directory is prepared in the scratch directory with the
 *   record inside, then renamed to `<stem>.lock`. rename(2) fails when the
 *   target is a non-empty directory and replaces an empty one, so the gate is
 *   never seen empty while held and an empty gate is simply free.
 * - Ending a hold (release or takeover) claims the record with one atomic call
 *   on its unique name: rename to `<stem>.fence` (which records the token) or
 *   unlink. Whoever comes second gets ENOENT and stops there. Then `rmdir`,
 *   which only removes an empty directory, so it can never remove a gate
 *   that another holder has taken in the meantime.
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
  /** The name of the holder's record inside the gate (unique to this hold). */
  readonly entry: string;
}

/**
 * Creates the gate with `owner`'s record inside, or rejects with LOCKED
 * (held) or RACED (a release happened while the token was chosen: retry).
 */
export async function createGate(
  store: Store,
  files: KeyFiles,
  owner: string,
  purpose: GrantRecord["purpose"],
  staleMs: number,
): Promise<GateGrant> {
  const { io } = store;
  const fence = await readFence(io, files);
  const plan = await planToken(io, files, fence, store.boot);
  const registry = purpose === "g" || (await registryMayHoldEntries(io, files, fence.record));
  const record = encodeRecord({
    token: plan.token,
    reserved: plan.reserved,
    boot: store.boot,
    staleMs,
    registry,
    pid: process.pid,
    purpose,
  });
  const prepared = store.scratchPath(owner);
  const entry = ownerEntry(prepared);
  await io.mkdir(prepared, 0o700);
  try {
    await io.symlink(record, join(prepared, entry));
    await io.rename(prepared, files.gate);
  } catch (error) {
    await unless(io.unlink(join(prepared, entry)), ["ENOENT"], undefined);
    await unless(io.rmdir(prepared), ["ENOENT", "ENOTEMPTY"], undefined);
    const code = errorCode(error);
    if (code === "ENOTEMPTY" || code === "EEXIST") throw protocolError(LOCKED, "the key is held");
    throw error;
  }
  // Held. The fence changes only when a gate's record is claimed, and this
  // gate's record is ours: if it changed since it was read, a hold began and
  // ended in between and the token may be stale. Hand the gate back, retry.
  const now = await unless(io.readlink(files.fence), ["ENOENT"], undefined);
  if (now !== fence.raw) {
    await undoGate(store, files, entry);
    throw protocolError(RACED, "a grant happened while the token was being chosen");
  }
  if (plan.mustReserve) {
    try {
      await reserveThrough(io, files, plan.token, store.boot, store.scratchPath(owner));
    } catch (error) {
      await undoGate(store, files, entry);
      throw error;
    }
  }
  return { token: plan.token, registry, entry };
}

/** Gives back a gate whose record must not reach the fence (its token was never granted). */
export async function undoGate(store: Store, files: KeyFiles, entry: string): Promise<void> {
  await unless(store.io.unlink(join(files.gate, entry)), ["ENOENT"], undefined);
  await unless(store.io.rmdir(files.gate), ["ENOENT", "ENOTEMPTY", "EEXIST"], undefined);
}

/** Ends `owner`'s hold of the gate: its record goes to the fence, then the empty gate is removed. */
export async function removeGate(store: Store, files: KeyFiles, entry: string): Promise<void> {
  const claimed = await unless(
    store.io.rename(join(files.gate, entry), files.fence).then(() => true),
    ["ENOENT"],
    false,
  );
  // Not ours any more (taken over): nothing of ours is left to remove.
  if (!claimed) return;
  await unless(store.io.rmdir(files.gate), ["ENOENT", "ENOTEMPTY", "EEXIST"], undefined);
}

/** `removeGate`, synchronously, for proper-lockfile's exit handler. */
export function removeGateSync(files: KeyFiles, entry: string): void {
  try {
    fs.renameSync(join(files.gate, entry), files.fence);
  } catch {
    return;
  }
  try {
    fs.rmdirSync(files.gate);
  } catch {
    // taken again meanwhile, or already gone
  }
}

/** Resolves when the record `entry` is still in the gate; rejects with ENOENT otherwise. */
export async function verifyGate(store: Store, files: KeyFiles, entry: string): Promise<void> {
  await store.io.lstat(join(files.gate, entry));
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
    if (raw !== undefined) await claimStale(store, files, name, parseRecord(raw));
  }
}

/** What a contender found when the gate was in its way. */
export type GateState =
  | { readonly kind: "free" }
  | { readonly kind: "held"; readonly retryAfterMs: number; readonly record?: GrantRecord };

const FREE: GateState = { kind: "free" };

/**
 * Looks at a gate that is in the way: free (missing or empty), held and
 * fresh, or held and stale, in which case its record is claimed and the gate
 * reported free. `staleMs` is used when the record cannot be read.
 */
export async function inspectGate(
  store: Store,
  files: KeyFiles,
  staleMs: number,
): Promise<GateState> {
  const { io } = store;
  const names = await unless(io.readdir(files.gate), ["ENOENT"], undefined);
  if (names === undefined || names.length === 0) {
    store.freshness.forget(files.gate);
    return FREE;
  }
  const entry =
    names.length === 1 && names[0]!.startsWith(OWNER_ENTRY_PREFIX) ? names[0] : undefined;
  const stats = await unless(io.lstat(files.gate), ["ENOENT"], undefined);
  const raw =
    entry === undefined
      ? undefined
      : await unless(io.readlink(join(files.gate, entry)), ["ENOENT"], null);
  // It changed while we looked: look again on the next attempt.
  if (stats === undefined || raw === null) return FREE;
  const record = raw === undefined ? undefined : parseRecord(raw);
  const stale = record?.staleMs ?? staleMs;
  const identity = `${stats.ino}:${stats.mtimeMs}:${names.join("/")}`;
  const verdict = store.freshness.judge(files.gate, identity, stats.mtimeMs, stale);
  if (!verdict.stale) {
    return record === undefined
      ? { kind: "held", retryAfterMs: verdict.retryAfterMs }
      : { kind: "held", retryAfterMs: verdict.retryAfterMs, record };
  }
  if (entry === undefined) {
    throw Object.assign(
      new Error(`${files.gate} holds entries this backend did not write (${names.join(", ")})`),
      { code: "EUNKNOWNLOCK" },
    );
  }
  await failpoints.beforeClaim?.(files.gate);
  const claimed = await claimStale(store, files, entry, record);
  failpoints.afterClaim?.(files.gate, claimed);
  store.freshness.forget(files.gate);
  return FREE;
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
  const claimed = await unless(
    (keep ? io.rename(path, files.fence) : io.unlink(path)).then(() => true),
    ["ENOENT"],
    false,
  );
  if (claimed) await unless(io.rmdir(files.gate), ["ENOENT", "ENOTEMPTY", "EEXIST"], undefined);
  return claimed;
}
