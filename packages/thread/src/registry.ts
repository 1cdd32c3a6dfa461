import type { KeyState } from "./isolate.js";

/**
 * The lock resource of the in-isolate backend: every `threadBackend()` of one
 * isolate (one thread) shares it, so instances contend with each other as
 * the contract requires. It lives on `globalThis` under a registered symbol,
 * so two copies of this package loaded in one isolate (a duplicate install,
 * source and build side by side) still share one table instead of silently
 * granting the same key twice.
 */
export interface Registry {
  /** Keys with holders or waiters, by `scopedKey(namespace, key)`. Idle keys are deleted. */
  readonly states: Map<string, KeyState>;
  /** The last fencing token handed out in this isolate: one counter, no per-key memory. */
  fence: bigint;
}

const REGISTRY: unique symbol = Symbol.for("@locks/thread:registry:v1");

const scope = globalThis as typeof globalThis & { [REGISTRY]?: Registry };
if (scope[REGISTRY] === undefined) {
  const created: Registry = { states: new Map(), fence: 0n };
  Object.defineProperty(scope, REGISTRY, { value: created, enumerable: false });
}

/** The isolate's registry. */
export const registry: Registry = scope[REGISTRY]!;
