import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
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
