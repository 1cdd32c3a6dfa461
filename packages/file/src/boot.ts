import { readFileSync } from "node:fs";

let cached: string | undefined;

/**
 * An id that changes on every boot of the machine (Linux:
 * /proc/sys/kernel/random/boot_id), or "" where there is none. Records
 * written before a reboot may have been lost with the page cache, so the
 * fencing counter trusts them only when they carry the current boot id.
 *
 * Written compactly (the UUID's 16 bytes as 22 base64url characters): a
 * record stays under 60 bytes, which ext4 keeps inside the symlink's inode
 * (a "fast" symlink), where a longer target costs a data block allocated
 * and freed per grant. A record of an earlier version carries the UUID
 * form; it only reads as another boot's, so counting restarts above the
 * durable reservation, as after a reboot.
 */
export function bootId(): string {
  if (cached === undefined) {
    try {
      const uuid = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      const hex = uuid.replaceAll("-", "");
      cached = /^[0-9a-f]{32}$/i.test(hex) ? Buffer.from(hex, "hex").toString("base64url") : "";
    } catch {
      cached = "";
    }
  }
  return cached;
}
