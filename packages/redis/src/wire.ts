import {
  type Attempt,
  type Capabilities,
  type KeyStatus,
  keyDigest,
  type LockRequest,
  limitMismatch,
} from "@locks/core/backend";
import type { Connection } from "./connection.js";
import { type KeyLayout, keyLayout } from "./layout.js";
import { scripts } from "./scripts.js";

/** The mode letter the scripts use: `x` exclusive, `r` shared reader, `s` semaphore slot. */
export type WireMode = "x" | "r" | "s";

export function wireMode(request: LockRequest): WireMode {
  if (request.mode === "shared") return "r";
  return request.limit > 1 ? "s" : "x";
}

/** The sorted set of holders of `mode` (exclusive holders have none: `readers`, for the fair scripts). */
export function holdersKey(layout: KeyLayout, mode: WireMode): string {
  return mode === "s" ? layout.slots : layout.readers;
}

/** `keys` plus the holders' sorted set when the mode has one: exclusive commands stay short. */
export function withHolders(keys: string[], layout: KeyLayout, mode: WireMode): string[] {
  if (mode !== "x") keys.push(holdersKey(layout, mode));
  return keys;
}

/**
 * The release script's keys and arguments (`fair`: it also leaves the queue).
 * Its notification carries a random tag of this release, so that Redlock
 * drops the copies each member publishes, and only those (the owner would not
 * do: the failed attempts of one acquire release under the same owner).
 */
export function releaseCall(
  request: LockRequest,
  l: KeyLayout,
  publish: string,
  fair: boolean,
): [string[], Array<string | number>] {
  const mode = wireMode(request);
  const keys = fair
    ? [l.exclusive, l.channel, holdersKey(l, mode), l.queue, l.queueExpiry]
    : withHolders([l.exclusive, l.channel], l, mode);
  const tag = Math.random().toString(36).slice(2, 10);
  return [keys, [request.owner, mode, publish, tag, fair ? 1 : 0]];
}

/** The manifest of every configuration: Redlock has no semaphore nor fair mode, and a higher floor. */
export function capabilities(semaphore: boolean, fair: boolean, minTtlMs: number): Capabilities {
  return Object.freeze({
    scope: "cluster",
    ttl: true,
    fencing: true,
    shared: true,
    semaphore,
    fair,
    notify: true,
    minTtlMs,
  });
}

/** The keys of the acquire scripts: holder, fence and both holder sets (a request of another limit is detected in either). */
export function acquireKeys(layout: KeyLayout): string[] {
  return [layout.exclusive, layout.fence, layout.readers, layout.slots];
}

/**
 * Reads an acquire script's reply: `[1, token]` granted, `[0, msUntilItMayBeFree]`
 * refused; `[2, holdersLimit]` throws `limitMismatch` (INVALID_ARGUMENT): the key's
 * holders took it with another limit. A grant carries `hold`.
 */
export function parseAcquireReply<Hold>(
  reply: unknown,
  request: LockRequest,
  hold?: Hold,
): Attempt<Hold> {
  if (!Array.isArray(reply) || reply.length !== 2) {
    throw new Error(`unexpected reply from the acquire script: ${JSON.stringify(reply)}`);
  }
  const [outcome, value] = reply as [unknown, unknown];
  if (outcome === 1) return { granted: true, fencingToken: BigInt(value as number | string), hold };
  if (outcome === 2) throw limitMismatch(request.limit, Number(value));
  return { granted: false, retryAfterMs: Math.max(0, Number(value)) };
}

/**
 * The inspect script's reply: exclusive owner, its PTTL, readers and slots as
 * [owner, msLeft, ...], fence counter, and the holders' limit (1 unless a semaphore).
 */
type Snapshot = [string | null, number, Holders, Holders, string | null, number];
/** `[owner, msLeft, owner, msLeft, ...]` */
type Holders = Array<string | number>;

/** Who holds `key` on the server of `connection` (with `limit` while the key is held). */
export async function readStatus(
  connection: Connection,
  namespace: string,
  key: string,
  timeoutMs: number,
): Promise<KeyStatus> {
  const l = keyLayout(keyDigest(namespace, key));
  const keys = [l.exclusive, l.readers, l.slots, l.fence];
  const reply = await connection.run(scripts.inspect, keys, [], timeoutMs);
  const [owner, pttl, readers, slots, fence, limit] = reply as Snapshot;
  const holders: Array<KeyStatus["holders"][number]> = [];
  if (owner !== null) {
    holders.push({
      owner,
      mode: "exclusive",
      ...(fence !== null ? { fencingToken: BigInt(fence) } : {}),
      ...(pttl >= 0 ? { expiresInMs: pttl } : {}),
    });
  }
  // A semaphore's holders hold in mode "exclusive" (the core's KeyStatus: the limit tells them apart).
  for (const [list, mode] of [
    [readers, "shared"],
    [slots, "exclusive"],
  ] as const) {
    for (let i = 0; i + 1 < list.length; i += 2) {
      holders.push({ owner: String(list[i]), mode, expiresInMs: Number(list[i + 1]) });
    }
  }
  if (holders.length === 0) return { held: false, holders };
  return { held: true, limit: Number(limit), holders };
}
