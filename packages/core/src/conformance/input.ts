import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { createLocks } from "../locks.js";
import type { AcquireOptions } from "../options.js";
import { Harness } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Bad input is refused with INVALID_ARGUMENT naming the argument, before any I/O. */
export function inputTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("bad input", () => {
    const badKeys: Array<[string, unknown]> = [
      ["empty", ""],
      ["1025 bytes", "x".repeat(1025)],
      ["1026 bytes of 2-byte characters", "é".repeat(513)],
      // 400 UTF-16 units, but 1200 UTF-8 bytes: keys are measured in bytes on every path.
      ["1200 bytes of 3-byte characters", "中".repeat(400)],
      // UTF-8 turns every lone surrogate into U+FFFD: these two would be one lock.
      ["a lone high surrogate (k\\uD800)", "k\uD800"],
      ["another lone high surrogate (k\\uDBFF)", "k\uDBFF"],
      ["a lone low surrogate (k\\uDC00)", "k\uDC00"],
      ["a number", 42],
      ["undefined", undefined],
      ["null", null],
      ["an object", { key: "k" }],
    ];
    it.each(badKeys)("refuses a key that is %s", async (_label, key) => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      for (const attempt of [
        () => locks.acquire(key as string),
        () => locks.tryAcquire(key as string),
        () => locks.withLock(key as string, () => 1),
      ]) {
        const error = await attempt().then(
          () => undefined,
          (e: unknown) => e as { code?: string; message?: string },
        );
        expect(error?.code).toBe("INVALID_ARGUMENT");
        expect(error?.message).toMatch(/key/);
      }
      expect(calls()).toBe(0);
    });

    const badOptions: Array<[string, AcquireOptions, string]> = [
      ["ttlMs 0", { ttlMs: 0 }, "ttlMs"],
      ["ttlMs -1", { ttlMs: -1 }, "ttlMs"],
      ["ttlMs NaN", { ttlMs: Number.NaN }, "ttlMs"],
      ["ttlMs Infinity", { ttlMs: Number.POSITIVE_INFINITY }, "ttlMs"],
      ["ttlMs as a string", { ttlMs: "100" as unknown as number }, "ttlMs"],
      ["limit 0", { limit: 0 }, "limit"],
      ["limit 1.5", { limit: 1.5 }, "limit"],
      ["limit NaN", { limit: Number.NaN }, "limit"],
      ["timeoutMs -1", { timeoutMs: -1 }, "timeoutMs"],
      ["timeoutMs NaN", { timeoutMs: Number.NaN }, "timeoutMs"],
      ["an unknown mode", { mode: "bogus" as "shared" }, "mode"],
      ["a signal that is not an AbortSignal", { signal: "x" as unknown as AbortSignal }, "signal"],
      ["autoExtend not a boolean", { autoExtend: 1 as unknown as boolean }, "autoExtend"],
      ["an unknown option", { timeout: 5 } as AcquireOptions, "timeout"],
    ];
    it.each(badOptions)("refuses %s", async (_label, bad, name) => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      const error = await locks.acquire("k", bad).then(
        () => undefined,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(error?.code).toBe("INVALID_ARGUMENT");
      expect(error?.message).toContain(name);
      expect(calls()).toBe(0);
    });

    it("refuses timeoutMs in tryAcquire, and shared mode with limit > 1", async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      await expect(locks.tryAcquire("k", { timeoutMs: 5 } as AcquireOptions)).rejects.toMatchObject(
        {
          code: "INVALID_ARGUMENT",
        },
      );
      await expect(locks.acquire("k", { mode: "shared", limit: 2 })).rejects.toMatchObject({
        code: "INVALID_ARGUMENT",
      });
      expect(calls()).toBe(0);
    });

    it("refuses a bad ttl in extend() and keeps the lease", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      const lease = await locks.acquire("k");
      await expect(lease.extend(-5)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      expect(lease.signal.aborted).toBe(false);
      await lease.release();
    });

    it("refuses a namespace with a lone surrogate, before any I/O", async () => {
      const h = new Harness(options);
      const { backend, calls } = await h.countedBackend();
      for (const namespace of ["x\uD800", "x\uDC00"]) {
        let error: { code?: string; message?: string } | undefined;
        try {
          createLocks(backend, { namespace });
        } catch (e) {
          error = e as { code?: string; message?: string };
        }
        expect(error?.code, JSON.stringify(namespace)).toBe("INVALID_ARGUMENT");
        expect(error?.message).toMatch(/namespace/);
      }
      expect(calls()).toBe(0);
    });

    it("createLocks refuses bad client options synchronously", async () => {
      const backend = await options.create();
      try {
        for (const bad of [
          { namespace: "" },
          { ttlMs: -1 },
          { namespace: 7 as unknown as string },
        ]) {
          expect(() => createLocks(backend, bad)).toThrow(
            expect.objectContaining({ code: "INVALID_ARGUMENT" }),
          );
        }
      } finally {
        await backend.close();
      }
      expect(capabilities).toBeDefined();
    });
  });
}
