import type { KeyStatus } from "@locks/core/backend";

/**
 * The inspect script's reply: exclusive owner, its PTTL, readers and slots as
 * [owner, msLeft, ...], fence counter, and the holders' limit (1 unless a semaphore).
 */
export type Snapshot = [
  string | null,
  number,
  Array<string | number>,
  Array<string | number>,
  string | null,
  number,
];

/** Turns the inspect script's snapshot into a `KeyStatus` (with `limit` while the key is held). */
export function statusFromSnapshot(reply: Snapshot): KeyStatus {
  const [owner, pttl, readers, slots, fence, limit] = reply;
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
