import { codedError, type Io, unless } from "./io.js";
import type { KeyFiles } from "./names.js";
import { type GrantRecord, parseRecord } from "./record.js";

/**
 * The fencing counter of a key has two parts:
 *
 * - `<stem>.fence`, a symlink holding the last grant's record. A holder's
 *   record is created with its token before the grant and moved there by one
 *   `rename` when the hold ends (release or takeover). It survives process
 *   crashes and restarts (the page cache does), not a machine crash.
 * - `<stem>.reserve`, a regular file holding a durable upper bound: every
 *   token ever granted is at most this value. It is written while holding the
 *   gate, atomically (temp file, fsync, rename, fsync of the directory), one
 *   block of tokens ahead, so the fsync is paid once per block.
 *
 * After a reboot (the boot id changed) the fence is not trusted and counting
 * restarts above the durable reservation, so tokens still strictly increase.
 */
export const RESERVE_BLOCK = 1024n;

/** The last grant's record as read from the fence, with its raw text to detect changes. */
export interface FenceState {
  readonly raw: string | undefined;
  readonly record: GrantRecord | undefined;
}

export async function readFence(io: Io, files: KeyFiles): Promise<FenceState> {
  const raw = await unless(io.readlink(files.fence), ["ENOENT"], undefined);
  return { raw, record: raw === undefined ? undefined : parseRecord(raw) };
}

/** A token chosen for a grant, and whether a reservation must be written before granting it. */
export interface TokenPlan {
  readonly token: bigint;
  /** The durable reservation known now (goes into the holder's record). */
  readonly reserved: bigint;
  /** When set, `reserveThrough(token + block - 1)` must succeed before the grant. */
  readonly mustReserve: boolean;
}

/** The next token after `fence`, trusting the fence only when it was written during this boot. */
export async function planToken(
  io: Io,
  files: KeyFiles,
  fence: FenceState,
  boot: string,
): Promise<TokenPlan> {
  const last = fence.record;
  const trusted = boot !== "" && last !== undefined && last.boot === boot;
  if (trusted && last.token + 1n <= last.reserved) {
    return { token: last.token + 1n, reserved: last.reserved, mustReserve: false };
  }
  const durable = await readReservation(io, files);
  const token = trusted ? last.token + 1n : durable + 1n;
  return { token, reserved: durable, mustReserve: token > durable };
}

/** The durable reservation, 0 when there is none yet. */
export async function readReservation(io: Io, files: KeyFiles): Promise<bigint> {
  const text = await unless(io.readFile(files.reserve), ["ENOENT"], "0");
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw codedError("EBADRESERVE", `corrupt fencing reservation in ${files.reserve}`);
  }
  return BigInt(trimmed);
}

/** Durably raises the reservation so that `token` (and the block after it) may be granted. */
export async function reserveThrough(
  io: Io,
  files: KeyFiles,
  token: bigint,
  boot: string,
  temp: string,
): Promise<void> {
  // Without a boot id a crash cannot be told from a restart: reserve one token at a time.
  const block = boot === "" ? 1n : RESERVE_BLOCK;
  try {
    await io.writeDurable(files.reserve, temp, `${token + block - 1n}\n`);
  } catch (error) {
    await unless(io.unlink(temp), ["ENOENT"], undefined);
    throw error;
  }
}
