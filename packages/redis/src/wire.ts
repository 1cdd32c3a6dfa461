import {
  type Attempt,
  type Capabilities,
  type HolderStatus,
  type KeyRef,
  type KeyStatus,
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

/**
 * The keys that describe the hold of `request`: the holder marker, then the
 * details hash and the holders' sorted set where it has them (an unlabelled
 * exclusive holder has neither: its commands stay short). The order of the
 * extend script's KEYS.
 */
export function holdKeys(request: LockRequest, l: KeyLayout): string[] {
  const mode = wireMode(request);
  if (mode !== "x") return [l.exclusive, l.details, holdersKey(l, mode)];
  return request.holder === undefined ? [l.exclusive] : [l.exclusive, l.details];
}

/** The acquire scripts' arguments after their own: the label, when the request has one. */
export function withLabel(
  args: Array<string | number>,
  request: LockRequest,
): Array<string | number> {
  if (request.holder !== undefined) args.push(request.holder);
  return args;
}

/**
 * The release script's keys and arguments (`fair`: it also leaves the queue).
 * Its notification carries `tag`: empty on one server; for Redlock a random
 * tag of this release (`releaseTag()`), so that waiters drop the copies each
 * member publishes, and only those (the owner would not do: the failed
 * attempts of one acquire release under the same owner).
 */
export function releaseCall(
  request: LockRequest,
  l: KeyLayout,
  publish: string,
  fair: boolean,
  tag = "",
): [string[], Array<string | number>] {
  const mode = wireMode(request);
  // The common release: exclusive, unlabelled, not fair, one server.
  if (mode === "x" && !fair && tag === "" && request.holder === undefined) {
    return [
      [l.exclusive, l.channel],
      [request.owner, publish],
    ];
  }
  const [x, ...rest] = holdKeys(request, l);
  const keys = fair
    ? [l.exclusive, l.channel, l.details, holdersKey(l, mode), l.queue, l.queueExpiry]
    : [x as string, l.channel, ...rest];
  const args: Array<string | number> = [request.owner, publish, mode, tag, fair ? 1 : 0];
  if (request.holder !== undefined) args.push(1);
  return [keys, args];
}

/** The force-release script's keys and arguments: every key of the lock but the counter. */
export function forceReleaseCall(key: KeyRef, publish: string, tag = ""): [string[], string[]] {
  const l = keyLayout(key);
  const keys = [l.exclusive, l.readers, l.slots, l.details, l.channel, l.queue, l.queueExpiry];
  return [keys, [publish, tag]];
}

/** A random tag for a Redlock notification (waiters hear each once, however many members publish it). */
export function releaseTag(): string {
  return Math.random().toString(36).slice(2, 10);
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

/** The keys of the acquire scripts: holder and fence (the scripts derive the others' names from the holder's). */
export function acquireKeys(layout: KeyLayout): string[] {
  return [layout.exclusive, layout.fence];
}

/**
 * Reads an acquire script's reply: `t<token>` granted (the common reply: no
 * array to build or parse; the prefix makes it unmistakable for another
 * script's reply), `[0, msUntilItMayBeFree]` refused;
 * `[2, holdersLimit]` throws `limitMismatch` (INVALID_ARGUMENT): the key's
 * holders took it with another limit. A grant carries `hold`.
 */
export function parseAcquireReply<Hold>(
  reply: unknown,
  request: LockRequest,
  hold?: Hold,
): Attempt<Hold> {
  if (typeof reply === "string" && reply.startsWith("t")) {
    return { granted: true, fencingToken: BigInt(reply.slice(1)), hold };
  }
  if (!Array.isArray(reply) || reply.length !== 2) {
    throw new Error(`unexpected reply from the acquire script: ${JSON.stringify(reply)}`);
  }
  const [outcome, value] = reply as [unknown, unknown];
  if (outcome === 2) throw limitMismatch(request.limit, Number(value));
  return { granted: false, retryAfterMs: Math.max(0, Number(value)) };
}

/**
 * The inspect script's reply: the holders' limit, the fence counter, then
 * four entries per live holder: owner, mode letter, ms left, its details
 * (token, then a space and its label) or null.
 */
type Snapshot = [number, string | null, ...Array<string | number | null>];

/** Who holds `key` on the server of `connection` (with `limit` while the key is held). */
export async function readStatus(
  connection: Connection,
  key: KeyRef,
  timeoutMs: number,
): Promise<KeyStatus> {
  const l = keyLayout(key);
  const keys = [l.exclusive, l.readers, l.slots, l.fence, l.details];
  const [limit, fence, ...rest] = (await connection.run(
    scripts.inspect,
    keys,
    [],
    timeoutMs,
  )) as Snapshot;
  const holders: HolderStatus[] = [];
  for (let i = 0; i + 3 < rest.length; i += 4) {
    const [owner, mode, msLeft, details] = rest.slice(i, i + 4);
    // Only an unlabelled exclusive holder has no details: its token is the counter's value.
    const [token, holder] =
      typeof details === "string" ? splitOnce(details, " ") : [mode === "x" ? fence : null];
    holders.push({
      holder,
      owner: String(owner),
      // A semaphore's holders hold in mode "exclusive" (the core's KeyStatus: the limit tells them apart).
      mode: mode === "r" ? "shared" : "exclusive",
      fencingToken: BigInt(token ?? 0),
      expiresInMs: Math.max(0, Number(msLeft)),
    });
  }
  return holders.length === 0 ? { holders } : { holders, limit: Number(limit) };
}

/** `text` before and after the first `separator` (after: undefined without one). */
function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + separator.length)];
}
