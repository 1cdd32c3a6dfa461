import { describe, expect, it, vi } from "vitest";
import type { Capabilities } from "../backend.js";
import type { Lease } from "../lease.js";
import { codeOf, Harness, wallNow } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Optional parts of the contract the probe instance has. */
export interface Optional {
  readonly inspect: boolean;
  readonly forceRelease: boolean;
}

/** A label no store may mangle: quotes, a path, a newline, a tab, non-BMP text; 255 UTF-8 bytes. */
const AWKWARD_LABEL = `"q'uote" /../etc\\ new\nline\ttab ünï 🔒 ${"x".repeat(207)}`;

/**
 * Who holds a key: the `holder` label is stored with the lock and reported
 * by `inspect` from any other client; `forceRelease` evicts every holder and
 * fences them (later grants get higher tokens, their extensions are refused).
 */
export function holderTests(
  options: ConformanceOptions,
  capabilities: Capabilities,
  optional: Optional,
): void {
  const noInspect = !optional.inspect;
  const noForce = !optional.forceRelease || !optional.inspect;

  describe("holder labels and inspect (inspect)", () => {
    it.skipIf(noInspect)("reports a free key as free, and inspecting takes no lock", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      expect(await a!.inspect("free")).toStrictEqual({ key: "free", holders: [] });
      const lease = await b!.tryAcquire("free");
      expect(lease).not.toBeNull();
      await lease!.release();
    });

    it.skipIf(noInspect)(
      "reports the holder's label, mode, token and expiry to another instance",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const before = wallNow();
        const lease = await a!.acquire("labelled", { holder: "worker-7", ttlMs: 30_000 });
        const state = await b!.inspect("labelled");
        expect(state.key).toBe("labelled");
        // The shape DESIGN.md shows: a limit only for a semaphore.
        expect(Object.keys(state).sort()).toEqual(["holders", "key"]);
        expect(state.holders).toHaveLength(1);
        const [holder] = state.holders;
        expect(Object.keys(holder!).sort()).toEqual([
          "expiresAt",
          "fencingToken",
          "holder",
          "mode",
        ]);
        expect(holder!.holder).toBe("worker-7");
        expect(holder!.mode).toBe("exclusive");
        expect(holder!.fencingToken).toBe(lease.fencingToken);
        if (capabilities.ttl) {
          expect(holder!.expiresAt).toBeTypeOf("number");
          expect(holder!.expiresAt!).toBeGreaterThan(before);
          // Never later than the TTL allows (1 s of slack for the two clocks).
          expect(holder!.expiresAt!).toBeLessThanOrEqual(wallNow() + 30_000 + 1_000);
        } else {
          expect(holder!.expiresAt).toBeUndefined();
        }
        await lease.release();
        expect((await b!.inspect("labelled")).holders).toEqual([]);
      },
    );

    it.skipIf(noInspect)(
      "stores any label of up to 256 bytes as given, and none when none is given",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const awkward = await a!.acquire("awkward", { holder: AWKWARD_LABEL });
        const longest = await a!.acquire("longest", { holder: "é".repeat(128) });
        const unlabelled = await a!.acquire("unlabelled");
        expect((await b!.inspect("awkward")).holders.map((x) => x.holder)).toEqual([AWKWARD_LABEL]);
        expect((await b!.inspect("longest")).holders.map((x) => x.holder)).toEqual([
          "é".repeat(128),
        ]);
        expect((await b!.inspect("unlabelled")).holders.map((x) => x.holder)).toEqual([undefined]);
        // A label is data, never a name: no other key became held.
        expect((await b!.inspect("etc")).holders).toEqual([]);
        await Promise.all([awkward.release(), longest.release(), unlabelled.release()]);
      },
    );

    it.skipIf(noInspect)("tryAcquire, withLock and acquireAll store the label too", async () => {
      const h = new Harness(options);
      const [a, b] = await h.clients(2);
      const tried = await a!.tryAcquire("try-labelled", { holder: "try" });
      expect((await b!.inspect("try-labelled")).holders[0]?.holder).toBe("try");
      await tried!.release();
      const seen = await a!.withLock(
        "with-labelled",
        async () => (await b!.inspect("with-labelled")).holders[0]?.holder,
        { holder: "with" },
      );
      expect(seen).toBe("with");
      const all = await a!.acquireAll(["all-1", "all-2"], { holder: "all" });
      for (const key of ["all-1", "all-2"]) {
        expect((await b!.inspect(key)).holders[0]?.holder).toBe("all");
      }
      await all.release();
    });

    it.skipIf(noInspect || !capabilities.shared)(
      "lists every reader with its own label (shared)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const r1 = await a!.acquire("readers", { mode: "shared", holder: "r1" });
        const r2 = await b!.acquire("readers", { mode: "shared", holder: "r2" });
        const state = await c!.inspect("readers");
        expect(state.holders.map((x) => [x.holder, x.mode, x.fencingToken])).toEqual(
          [r1, r2]
            .sort((x, y) => (x.fencingToken < y.fencingToken ? -1 : 1))
            .map((r) => [r === r1 ? "r1" : "r2", "shared", r.fencingToken]),
        );
        await Promise.all([r1.release(), r2.release()]);
      },
    );

    it.skipIf(noInspect || !capabilities.semaphore)(
      "lists every semaphore holder with its label, and the limit (semaphore)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const s1 = await a!.acquire("slots", { limit: 3, holder: "s1" });
        const s2 = await b!.acquire("slots", { limit: 3, holder: "s2" });
        const state = await c!.inspect("slots");
        expect(state.limit).toBe(3);
        expect(state.holders.map((x) => x.holder).sort()).toEqual(["s1", "s2"]);
        await Promise.all([s1.release(), s2.release()]);
      },
    );

    it.skipIf(noInspect || !capabilities.ttl)(
      "no longer lists a holder whose TTL ran out without an extension (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const lease = await a!.acquire("abandoned", {
          holder: "gone",
          ttlMs: h.ttlMs,
          autoExtend: false,
        });
        await vi.waitFor(async () => expect((await b!.inspect("abandoned")).holders).toEqual([]), {
          timeout: h.ttlMs * 3 + 5_000,
          interval: 50,
        });
        await lease.release();
      },
    );
  });

  describe("forceRelease (inspect, forceRelease)", () => {
    it.skipIf(noForce)(
      "evicts the holder: the key is free at once, later tokens are higher, the evicted lease cannot extend",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const evicted = await a!.acquire("evict", { holder: "old" });
        expect(await b!.forceRelease("evict")).toBe(true);
        expect((await b!.inspect("evict")).holders).toEqual([]);
        const next = await c!.tryAcquire("evict", { holder: "new" });
        expect(next).not.toBeNull();
        if (capabilities.fencing) expect(next!.fencingToken).toBeGreaterThan(evicted.fencingToken);
        if (capabilities.ttl) expect(await codeOf(evicted.extend())).toBe("LOCK_LOST");
        // The evicted holder's release is owner-checked: it leaves the new holder's lock.
        await evicted.release();
        expect((await b!.inspect("evict")).holders.map((x) => x.holder)).toEqual(["new"]);
        expect(await b!.tryAcquire("evict")).toBeNull();
        await next!.release();
      },
    );

    it.skipIf(noForce)("resolves false for a key nobody holds", async () => {
      const h = new Harness(options);
      const [a] = await h.clients(1);
      expect(await a!.forceRelease("nobody")).toBe(false);
      const lease = await a!.acquire("nobody");
      await lease.release();
      expect(await a!.forceRelease("nobody")).toBe(false);
    });

    it.skipIf(noForce || !capabilities.ttl)(
      "aborts the evicted lease's signal with LOCK_LOST, at the latest at its next extension (ttl)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const evicted = await a!.acquire("evict-signal", { ttlMs: h.ttlMs });
        expect(await b!.forceRelease("evict-signal")).toBe(true);
        // The watchdog extends at about a third of the TTL: that extension is refused.
        await vi.waitFor(() => expect(evicted.signal.aborted).toBe(true), {
          timeout: h.ttlMs * 2 + 5_000,
          interval: 20,
        });
        expect((evicted.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
        expect(evicted.held).toBe(false);
      },
    );

    it.skipIf(noForce)("hands the key to a waiter, as a release does", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const evicted = await a!.acquire("evict-wake");
      const waiting = b!.acquire("evict-wake", { timeoutMs: 30_000, holder: "waiter" });
      await vi.waitFor(async () => expect(await c!.forceRelease("evict-wake")).toBe(true), {
        timeout: 10_000,
        interval: 50,
      });
      const granted = await waiting;
      expect((await c!.inspect("evict-wake")).holders.map((x) => x.holder)).toEqual(["waiter"]);
      if (capabilities.fencing) expect(granted.fencingToken).toBeGreaterThan(evicted.fencingToken);
      await Promise.all([granted.release(), evicted.release()]);
    });

    it.skipIf(noForce || !(capabilities.shared || capabilities.semaphore))(
      "evicts every reader or semaphore holder at once (shared or semaphore)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const take = (locks: typeof a): Promise<Lease> =>
          capabilities.shared
            ? locks!.acquire("evict-many", { mode: "shared" })
            : locks!.acquire("evict-many", { limit: 2 });
        const held = [await take(a), await take(b)];
        expect(await c!.forceRelease("evict-many")).toBe(true);
        expect((await c!.inspect("evict-many")).holders).toEqual([]);
        const writer = await c!.tryAcquire("evict-many", capabilities.shared ? {} : { limit: 2 });
        expect(writer).not.toBeNull();
        await writer!.release();
        await Promise.all(held.map((lease) => lease.release()));
      },
    );
  });

  describe("bad input to inspect, forceRelease and holder", () => {
    it("refuses bad keys and labels with INVALID_ARGUMENT before any I/O", async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      const attempts: Array<[string, () => Promise<unknown>]> = [
        ["key", () => locks.inspect("")],
        ["key", () => locks.inspect(42 as unknown as string)],
        ["key", () => locks.forceRelease("k\uD800")],
        ["holder", () => locks.acquire("k", { holder: "" })],
        ["holder", () => locks.acquire("k", { holder: "x".repeat(257) })],
        ["holder", () => locks.tryAcquire("k", { holder: "é".repeat(129) })],
        ["holder", () => locks.withLock("k", () => 1, { holder: 7 as unknown as string })],
        ["holder", () => locks.acquireAll(["k"], { holder: "k\uDC00" })],
      ];
      for (const [name, attempt] of attempts) {
        const error = await attempt().then(
          () => undefined,
          (e: unknown) => e as { code?: string; message?: string },
        );
        expect(error?.code, name).toBe("INVALID_ARGUMENT");
        expect(error?.message, name).toMatch(new RegExp(name));
      }
      expect(calls()).toBe(0);
    });

    it("refuses inspect and forceRelease after close() with LOCK_CLOSED", async () => {
      const h = new Harness(options);
      const locks = await h.client();
      await locks.close();
      expect(await codeOf(locks.inspect("k"))).toBe("LOCK_CLOSED");
      expect(await codeOf(locks.forceRelease("k"))).toBe("LOCK_CLOSED");
    });
  });
}
