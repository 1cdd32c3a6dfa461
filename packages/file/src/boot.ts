import { readFileSync } from "node:fs";

let cached: string | undefined;

/**
 * An id that changes on every boot of the machine (Linux:
 * /proc/sys/kernel/random/boot_id), or "" where there is none. Records
 * written before a reboot may have been lost with the page cache, so the
 * fencing counter trusts them only when they carry the current boot id.
 */
export function bootId(): string {
  if (cached === undefined) {
    try {
      cached = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      if (!/^[0-9a-f-]{8,64}$/i.test(cached)) cached = "";
    } catch {
      cached = "";
    }
  }
  return cached;
}
