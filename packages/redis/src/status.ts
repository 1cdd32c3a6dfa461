import { type KeyStatus, keyDigest } from "@locks/core/backend";
import type { Connection } from "./connection.js";
import { keyLayout } from "./layout.js";
import { scripts } from "./scripts.js";

/**
 * The inspect script's reply: exclusive owner, its PTTL, readers and slots as
 * [owner, msLeft, ...], fence counter, and the holders' limit (1 unless a semaphore).
 */
type Snapshot = [
  string | null,
  number,
  Array<string | number>,
  Array<string | number>,
  string | null,
  number,
];

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
