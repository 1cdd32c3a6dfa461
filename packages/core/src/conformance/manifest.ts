import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { MIN_TTL_MS } from "../options.js";
import type { ConformanceOptions } from "./options.js";

const FLAGS = ["ttl", "fencing", "shared", "semaphore", "fair", "notify"] as const;

/** The manifest itself: complete, well-typed, frozen, and consistent with the options given. */
export function manifestTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("capabilities manifest", () => {
    it("is frozen and complete", async () => {
      const backend = await options.create();
      try {
        expect(typeof backend.name).toBe("string");
        expect(backend.name.length).toBeGreaterThan(0);
        expect(Object.isFrozen(backend.capabilities)).toBe(true);
        expect(["process", "host", "cluster"]).toContain(backend.capabilities.scope);
        for (const flag of FLAGS) expect(typeof backend.capabilities[flag], flag).toBe("boolean");
        // Every instance of one configuration declares the same manifest.
        expect({ ...backend.capabilities }).toEqual({ ...capabilities });
      } finally {
        await backend.close();
      }
    });

    it("declares a minTtlMs, if any, that is a finite number of ms at or above the core's floor", () => {
      const { minTtlMs } = capabilities;
      if (minTtlMs !== undefined) {
        expect(typeof minTtlMs, "minTtlMs").toBe("number");
        expect(Number.isFinite(minTtlMs), `minTtlMs ${minTtlMs}`).toBe(true);
        expect(minTtlMs, "minTtlMs").toBeGreaterThanOrEqual(MIN_TTL_MS);
      }
      // The suite's short TTL must be one the backend accepts.
      const floor = Math.max(MIN_TTL_MS, minTtlMs ?? 0);
      expect(options.ttlMs ?? 1_000, "options.ttlMs of the suite").toBeGreaterThanOrEqual(floor);
    });

    it.skipIf(capabilities.scope === "process")(
      "comes with a way to start the backend in another process (scope host/cluster)",
      () => {
        expect(options.process?.module, "options.process.module").toBeTypeOf("string");
      },
    );

    it.skipIf(!capabilities.notify)("offers a subscribe hook (notify)", async () => {
      const backend = await options.create();
      try {
        expect(
          typeof backend.subscribe === "function" || typeof backend.acquire === "function",
        ).toBe(true);
      } finally {
        await backend.close();
      }
    });
  });
}
