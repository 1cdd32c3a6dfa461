import type { KeyStatus } from "@locks/core";

/** The inspect script's reply: exclusive owner, its PTTL, readers and slots as [owner, msLeft, ...], fence counter. */
export type Snapshot = [
  string | null,
  number,
  Array<string | number>,
  Array<string | number>,
  string | null,
];

/** Turns the inspect script's snapshot into a `KeyStatus`. */
export function statusFromSnapshot(reply: Snapshot): KeyStatus {
  const [owner, pttl, readers, slots, fence] = reply;
  const holders: Array<KeyStatus["holders"][number]> = [];
  if (owner !== null) {
    holders.push({
      owner,
      mode: "exclusive",
      ...(fence !== null ? { fencingToken: BigInt(fence) } : {}),
      ...(pttl >= 0 ? { expiresInMs: pttl } : {}),
    });
  }
  for (const [list, mode] of [
    [readers, "shared"],
    [slots, "exclusive"],
  ] as const) {
    for (let i = 0; i + 1 < list.length; i += 2) {
      holders.push({ owner: String(list[i]), mode, expiresInMs: Number(list[i + 1]) });
    }
  }
  return { held: holders.length > 0, holders };
}
