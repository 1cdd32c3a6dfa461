import { createHash } from "node:crypto";
import type { LockMode, LockRequest } from "./backend.js";
import { scopedKey } from "./keys.js";
import { newOwnerToken } from "./owner.js";

/*
 * The scoped key of the last request, reused while requests name the same
 * key: contention is many acquires of one key, and a reused string keeps
 * its hash, so the backend's map lookups do not hash a fresh string each time.
 */
let lastNamespace = "";
let lastKey = "";
let lastScoped = scopedKey(lastNamespace, lastKey);

/** @internal The one implementation of `LockRequest`: the digest is computed once, on first read. */
export class Request implements LockRequest {
  readonly scoped: string;
  #digest: Buffer | undefined;

  constructor(
    readonly key: string,
    readonly namespace: string,
    readonly owner: string,
    readonly mode: LockMode,
    readonly limit: number,
    readonly ttlMs: number,
    readonly holder: string | undefined = undefined,
  ) {
    if (key !== lastKey || namespace !== lastNamespace) {
      lastScoped = scopedKey(namespace, key);
      lastKey = key;
      lastNamespace = namespace;
    }
    this.scoped = lastScoped;
  }

  get digest(): Buffer {
    this.#digest ??= digestOf(this.scoped);
    return this.#digest;
  }
}

/** The digest of the last scoped key asked for: one SHA-256 per key, not per acquire, under contention. */
let lastDigested = "";
let lastDigest: Buffer | undefined;

function digestOf(scoped: string): Buffer {
  if (scoped !== lastDigested || lastDigest === undefined) {
    lastDigest = createHash("sha256").update(scoped, "utf8").digest();
    lastDigested = scoped;
  }
  return lastDigest;
}

/**
 * The fields of a request; all but `key` default (namespace "default", a fresh owner, exclusive, limit 1, 30 s, no holder label).
 *
 * @group Keys
 */
export type RequestFields = Pick<LockRequest, "key"> &
  Partial<Pick<LockRequest, "namespace" | "owner" | "mode" | "limit" | "ttlMs" | "holder">>;

/**
 * A request as the core would build it, for tests and tools that call a
 * backend directly (the conformance suite, `locks status`). Not validated.
 *
 * @group Keys
 */
export function createRequest(fields: RequestFields): LockRequest {
  return new Request(
    fields.key,
    fields.namespace ?? "default",
    fields.owner ?? newOwnerToken(),
    fields.mode ?? "exclusive",
    fields.limit ?? 1,
    fields.ttlMs ?? 30_000,
    fields.holder,
  );
}
