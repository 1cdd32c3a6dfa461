import { join } from "node:path";
import type { KeyRef } from "@locks/core/backend";

/**
 * Where one key lives under the lock directory. Every name is
 * `<hint>-<sha256 hex>`: the SHA-256 of (namespace, key) makes names
 * injective in practice, fixed in length and free of any character the file
 * system could interpret (`/`, `\`, `..`, NUL, case folding); the hint is a
 * short, lower-case, `[a-z0-9_-]` rendering of the key for people running `ls`.
 */
export interface KeyFiles {
  /** Shared prefix of the key's files, also the name the watcher matches. */
  readonly stem: string;
  /** The lock directory: exists while the key is held exclusively (or by a registrant). */
  readonly gate: string;
  /** Symlink whose target records the last grant (the fencing counter). */
  readonly fence: string;
  /** Regular file: the highest token reserved durably (fsynced). */
  readonly reserve: string;
  /** Directory of shared-mode and semaphore holders. */
  readonly registry: string;
}

const HINT_LENGTH = 24;

/** The files of `ref`'s key: named by its digest (SHA-256 of namespace and key) and a hint. */
export function keyFiles(directory: string, ref: Pick<KeyRef, "key" | "digest">): KeyFiles {
  const hint = ref.key
    .slice(0, HINT_LENGTH)
    .toLowerCase()
    .replace(/[^a-z0-9_-]/g, "_");
  const stem = `${hint}-${ref.digest.toString("hex")}`;
  return {
    stem,
    gate: join(directory, `${stem}${GATE_SUFFIX}`),
    fence: join(directory, `${stem}.fence`),
    reserve: join(directory, `${stem}.reserve`),
    registry: join(directory, `${stem}${REGISTRY_SUFFIX}`),
  };
}

/** How many keys' names a backend instance keeps (oldest out first: a Map keeps insertion order). */
const CACHED = 1_024;

/**
 * The files of the keys a backend instance used lately. Naming a key hashes
 * it (SHA-256, which the core computes on first read of `digest`) and joins
 * five paths: more CPU than a grant's file-system calls take on tmpfs.
 */
export class KeyNames {
  readonly #directory: string;
  readonly #byScoped = new Map<string, KeyFiles>();

  constructor(directory: string) {
    this.#directory = directory;
  }

  of(ref: Pick<KeyRef, "key" | "digest" | "scoped">): KeyFiles {
    let files = this.#byScoped.get(ref.scoped);
    if (files !== undefined) return files;
    files = keyFiles(this.#directory, ref);
    if (this.#byScoped.size >= CACHED) this.#byScoped.delete(this.#byScoped.keys().next().value!);
    this.#byScoped.set(ref.scoped, files);
    return files;
  }
}

export const GATE_SUFFIX = ".lock";
export const REGISTRY_SUFFIX = ".h";

/** The stem a directory entry belongs to, when it is a gate or a registry (for the watcher). */
export function stemOf(entry: string): string | undefined {
  if (entry.endsWith(GATE_SUFFIX)) return entry.slice(0, -GATE_SUFFIX.length);
  if (entry.endsWith(REGISTRY_SUFFIX)) return entry.slice(0, -REGISTRY_SUFFIX.length);
  return undefined;
}

/**
 * Name of a holder's record inside a gate: `o-` and a name unique to this
 * hold (`<owner>.<pid>-<n>`), so a claim can only ever hit the one record it
 * judged (an owner may retry and create another).
 */
export function ownerEntry(unique: string): string {
  return `${OWNER_ENTRY_PREFIX}${unique}`;
}

/** Every record name `owner` may have used starts with this. */
export function ownerPrefix(owner: string): string {
  return `${OWNER_ENTRY_PREFIX}${owner}.`;
}

export const OWNER_ENTRY_PREFIX = "o-";
