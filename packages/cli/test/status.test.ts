import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Backend, createLocks } from "@locks/core";
import { fileBackend } from "@locks/file";
import { afterAll, describe, expect, it } from "vitest";
import { readKeyStatus } from "../src/status.js";

const directory = mkdtempSync(join(tmpdir(), "locks-cli-status-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

/** The same store, seen through a backend that cannot tell who holds a key. */
function withoutInspect(inner: Backend): Backend {
  const { bind, subscribe } = inner;
  return {
    name: inner.name,
    capabilities: inner.capabilities,
    tryAcquire: (request) => inner.tryAcquire(request),
    extend: (request, hold, ttlMs) => inner.extend(request, hold, ttlMs),
    release: (request, hold) => inner.release(request, hold),
    close: () => inner.close(),
    ...(bind === undefined ? {} : { bind: bind.bind(inner) }),
    ...(subscribe === undefined ? {} : { subscribe: subscribe.bind(inner) }),
  };
}

/** The same store, through an inspect that lists holders but says `held: false` (postgres did for semaphores). */
function heldForgotten(inner: Backend): Backend {
  return {
    ...withoutInspect(inner),
    inspect: async (namespace, key) => ({
      ...(await inner.inspect!(namespace, key)),
      held: false,
    }),
  };
}

describe("locks status", () => {
  it("reports an inspect that fails with a store's own error as BACKEND_UNAVAILABLE, with it as cause", async () => {
    const cause = new Error("connection reset");
    const failing: Backend = {
      ...withoutInspect(fileBackend({ directory })),
      inspect: async () => {
        throw cause;
      },
    };
    await using viewer = createLocks(failing, { namespace: "inspect-fails" });
    const error = await readKeyStatus(viewer, "k").then(
      () => undefined,
      (e: unknown) => e as { code?: string; cause?: unknown },
    );
    expect(error?.code).toBe("BACKEND_UNAVAILABLE");
    expect(error?.cause).toBe(cause);
  });

  it("reports the holder where the backend can inspect", async () => {
    await using holder = createLocks(fileBackend({ directory }), { namespace: "inspect" });
    await using viewer = createLocks(fileBackend({ directory }), { namespace: "inspect" });
    const lease = await holder.acquire("k");
    const seen = await readKeyStatus(viewer, "k");
    expect(seen.detailed).toBe(true);
    expect(seen.result.held).toBe(true);
    expect(seen.result.holders.map((h) => h.fencingToken)).toContain(lease.fencingToken);
    await lease.release();
    expect((await readKeyStatus(viewer, "k")).result.held).toBe(false);
  });

  it("probes with a try-and-release where it cannot, and leaves the key free", async () => {
    await using holder = createLocks(fileBackend({ directory }), { namespace: "probe" });
    await using viewer = createLocks(withoutInspect(fileBackend({ directory })), {
      namespace: "probe",
    });
    const lease = await holder.acquire("k");
    expect(await readKeyStatus(viewer, "k")).toEqual({
      result: { held: true, holders: [] },
      detailed: false,
    });
    await lease.release();
    expect(await readKeyStatus(viewer, "k")).toEqual({
      result: { held: false, holders: [] },
      detailed: false,
    });
    // The probe let go: the key can be taken at once.
    const again = await holder.tryAcquire("k");
    expect(again).not.toBeNull();
    await again?.release();
  });

  it("reports semaphore holders as holding, with the key's limit, inspected or probed", async () => {
    await using holder = createLocks(fileBackend({ directory }), { namespace: "semaphore" });
    await using viewer = createLocks(fileBackend({ directory }), { namespace: "semaphore" });
    await using prober = createLocks(withoutInspect(fileBackend({ directory })), {
      namespace: "semaphore",
    });
    const leases = [
      await holder.acquire("pool", { limit: 2 }),
      await holder.acquire("pool", { limit: 2 }),
    ];
    const seen = await readKeyStatus(viewer, "pool");
    expect(seen.result).toMatchObject({ held: true, limit: 2 });
    expect(seen.result.holders.map((h) => h.mode)).toEqual(["exclusive", "exclusive"]);
    // The probe's limit (1) differs from the holders': refused, which means held.
    expect(await readKeyStatus(prober, "pool")).toEqual({
      result: { held: true, holders: [] },
      detailed: false,
    });
    for (const lease of leases) await lease.release();
    expect((await readKeyStatus(prober, "pool")).result.held).toBe(false);
  });

  it("never calls a key free while holders are listed", async () => {
    await using holder = createLocks(fileBackend({ directory }), { namespace: "listed" });
    await using viewer = createLocks(heldForgotten(fileBackend({ directory })), {
      namespace: "listed",
    });
    const lease = await holder.acquire("k");
    expect((await readKeyStatus(viewer, "k")).result.held).toBe(true);
    await lease.release();
    expect((await readKeyStatus(viewer, "k")).result.held).toBe(false);
  });
});
