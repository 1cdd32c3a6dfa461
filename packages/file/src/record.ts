/**
 * What a holder writes about itself: the target of a symlink (its owner
 * record inside the gate, or its registry entry), moved unchanged to
 * `<stem>.fence` when a gate hold ends. A symlink is created atomically with
 * its content and never rewritten, so a record can be read without locking
 * and claimed exactly once (rename or unlink of a name unique to its owner).
 * Nothing ever follows these symlinks: their targets are data.
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
  /** "x": an exclusive hold; "g": a hold of the gate to join the registry (and the registry entry it made). */
  readonly purpose: "x" | "g";
  /** The holder's label (`LockRequest.holder`), when it gave one. */
  readonly holder: string | undefined;
}

const VERSION = "1";

export function encodeRecord(record: GrantRecord): string {
  const fields = [
    VERSION,
    record.token,
    record.reserved,
    record.boot === "" ? "-" : record.boot,
    record.staleMs,
    record.registry ? 1 : 0,
    record.pid,
    record.purpose,
  ];
  // The label is any text (slashes, "..", newlines, NUL): stored as base64url, so a record holds
  // no "/" and no byte the label chose. Without a label the field is left out, as before labels.
  if (record.holder !== undefined) fields.push(Buffer.from(record.holder).toString("base64url"));
  return fields.join(" ");
}

/**
 * What `encodeRecord` writes (version 1): token, reserved, boot id ("-": none), staleness,
 * registry flag, pid, purpose, and optionally the label (base64url of at most 256 bytes).
 */
const RECORD = /^1 (\d+) (\d+) (\S+) (\d+) ([01]) (\d+) ([xg])(?: ([A-Za-z0-9_-]{2,344}))?$/;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Parses a record; undefined when it is not one this version wrote. */
export function parseRecord(raw: string): GrantRecord | undefined {
  const fields = RECORD.exec(raw)?.slice(1) as
    | [string, string, string, string, string, string, "x" | "g", string | undefined]
    | undefined;
  if (fields === undefined) return undefined;
  const [token, reserved, boot, staleMs, registry, pid, purpose, label] = fields;
  let holder: string | undefined;
  try {
    holder = label === undefined ? undefined : utf8.decode(Buffer.from(label, "base64url"));
  } catch {
    return undefined;
  }
  return {
    token: BigInt(token),
    reserved: BigInt(reserved),
    boot: boot === "-" ? "" : boot,
    staleMs: Number(staleMs),
    registry: registry === "1",
    pid: Number(pid),
    purpose,
    holder,
  };
}
