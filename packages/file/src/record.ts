/**
 * What a holder writes about itself: the target of its owner symlink inside
 * the gate, moved unchanged to `<stem>.fence` when the hold ends. A symlink
 * is created atomically with its content and never rewritten, so a record
 * can be read without locking and claimed exactly once (rename or unlink of
 * a name unique to its owner).
 */
export interface GrantRecord {
  /** Fencing token of this grant. */
  readonly token: bigint;
  /** Highest token known to be reserved durably when the record was written. */
  readonly reserved: bigint;
  /** Boot id of the machine when the record was written ("" when unknown). */
  readonly boot: string;
  /** After how long without an mtime refresh the gate may be taken over. */
  readonly staleMs: number;
  /** Whether the registry of shared/semaphore holders may be non-empty. */
  readonly registry: boolean;
  readonly pid: number;
  /** "x": an exclusive hold; "g": a short hold of the gate to join the registry. */
  readonly purpose: "x" | "g";
}

const VERSION = "1";

export function encodeRecord(record: GrantRecord): string {
  return [
    VERSION,
    record.token,
    record.reserved,
    record.boot === "" ? "-" : record.boot,
    record.staleMs,
    record.registry ? 1 : 0,
    record.pid,
    record.purpose,
  ].join(" ");
}

/** What `encodeRecord` writes (version 1): token, reserved, boot id ("-": none), staleness, registry flag, pid, purpose. */
const RECORD = /^1 (\d+) (\d+) (\S+) (\d+) ([01]) (\d+) ([xg])$/;

/** Parses a record; undefined when it is not one this version wrote. */
export function parseRecord(raw: string): GrantRecord | undefined {
  const fields = RECORD.exec(raw)?.slice(1) as
    | [string, string, string, string, string, string, "x" | "g"]
    | undefined;
  if (fields === undefined) return undefined;
  const [token, reserved, boot, staleMs, registry, pid, purpose] = fields;
  return {
    token: BigInt(token),
    reserved: BigInt(reserved),
    boot: boot === "-" ? "" : boot,
    staleMs: Number(staleMs),
    registry: registry === "1",
    pid: Number(pid),
    purpose,
  };
}
