import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import { codeOf, Harness, sleep } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** acquire / tryAcquire / release / withLock / await using, across backend instances. */
export function basicTests(options: ConformanceOptions, capabilities: Capabilities): void {
  describe("acquire and release", () => {
    it("grants a lease with the documented shape", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      const lease = await locks.acquire("shape");
      expect(lease.key).toBe("shape");
      expect(lease.mode).toBe("exclusive");
      expect(typeof lease.fencingToken).toBe("bigint");
      expect(lease.signal.aborted).toBe(false);
      if (capabilities.ttl) {
        expect(lease.expiresAt).toBeTypeOf("number");
        expect(lease.expiresAt!).toBeGreaterThan(Date.now());
      } else {
        expect(lease.expiresAt).toBeUndefined();
      }
      await lease.release();
      expect(lease.signal.aborted).toBe(true);
      expect((lease.signal.reason as { code?: string }).code).toBe("LOCK_RELEASED");
    });

    it("tryAcquire never grants a key another instance holds", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const held = await a!.acquire("busy");
      for (let i = 0; i < 40; i++) expect(await b!.tryAcquire("busy")).toBeNull();
      await held.release();
      const next = await b!.tryAcquire("busy");
      expect(next).not.toBeNull();
      await next!.release();
    });

    it("is not reentrant: a second acquire from the same client waits", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      const held = await locks.acquire("reentrant");
      expect(await locks.tryAcquire("reentrant")).toBeNull();
      expect(await codeOf(locks.acquire("reentrant", { timeoutMs: 50 }))).toBe("LOCK_TIMEOUT");
      await held.release();
    });

    it("withLock passes the lease, returns fn's value and releases even when fn throws", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const value = await a!.withLock("with", async (lease) => {
        expect(lease.key).toBe("with");
        expect(await b!.tryAcquire("with")).toBeNull();
        return 42;
      });
      expect(value).toBe(42);
      const boom = new Error("boom");
      await expect(
        a!.withLock("with", () => {
          throw boom;
        }),
      ).rejects.toBe(boom);
      const after = await b!.tryAcquire("with");
      expect(after).not.toBeNull();
      await after!.release();
    });

    it("await using releases at the end of the scope", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      {
        await using lease = await a!.acquire("scoped");
        expect(lease.signal.aborted).toBe(false);
        expect(await b!.tryAcquire("scoped")).toBeNull();
      }
      const after = await b!.tryAcquire("scoped");
      expect(after).not.toBeNull();
      await after!.release();
    });

    it("a waiter gets the key soon after the holder releases", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const held = await a!.acquire("handoff");
      const waiting = b!.acquire("handoff", { timeoutMs: 10_000 });
      await sleep(30);
      await held.release();
      const next = await waiting;
      expect(next.fencingToken > held.fencingToken || !capabilities.fencing).toBe(true);
      await next.release();
    });

    it("keeps namespaces apart and treats every key string as distinct", async () => {
      const h = new Harness(options);
      const a = await h.client();
      const other = await h.client({ namespace: `${h.namespace}-other` });
      const keys = [
        "k",
        "k/child",
        "../../etc/passwd",
        "/absolute",
        "C:\\windows",
        "with space",
        "{braces}",
        "nul\u0000byte",
        "caf\u00e9", // NFC
        "cafe\u0301", // NFD: a different key
        "é".repeat(512), // 1024 UTF-8 bytes: the maximum
        "\u{1F600}", // a surrogate pair (4 UTF-8 bytes): well-formed, accepted...
        "\u{1F601}", // ...and a different key from its neighbour
        "*",
        "%",
      ];
      const leases = [];
      for (const key of keys) {
        const lease = await a.tryAcquire(key);
        expect(lease, `key ${JSON.stringify(key.slice(0, 20))}`).not.toBeNull();
        leases.push(lease!);
        const elsewhere = await other.tryAcquire(key);
        expect(
          elsewhere,
          `same key in another namespace: ${JSON.stringify(key.slice(0, 20))}`,
        ).not.toBeNull();
        leases.push(elsewhere!);
      }
      // Each is held: a second client of the first namespace gets none of them.
      const b = await h.client();
      for (const key of keys) expect(await b.tryAcquire(key)).toBeNull();
      await Promise.all(leases.map((l) => l.release()));
    });
  });
}
