import { describe, expect, it } from "vitest";
import { domError, holdLock, rejection } from "../src/conformance/web-locks.js";
import { createLockManager, createLocks } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";
import { recorded } from "./unit/backend.js";

describe("createLockManager", () => {
  it("a lease that expires while the callback runs rejects the request with AbortError (cause LockLostError); the manager moves on", async () => {
    const namespace = `wl-${Math.random()}`;
    const m = createLockManager(
      createLocks(memoryBackend(), { namespace, ttlMs: 100, autoExtend: false }),
    );
    const other = createLockManager(createLocks(memoryBackend(), { namespace }));
    const held = holdLock(m, "res");
    const lock = await held.granted;
    const error = await rejection(held.done);
    expect(domError(error)).toBe("AbortError");
    expect((error as Error).cause).toMatchObject({ code: "LOCK_LOST", name: "LockLostError" });
    expect(lock!.signal.aborted).toBe(true);
    expect(await other.request("res", (l) => l?.name)).toBe("res");
    expect(await m.request("res", (l) => l?.name)).toBe("res");
  });

  it("refuses anything but a Locks client", () => {
    for (const bad of [undefined, null, {}, { acquire() {} }]) {
      expect(() => createLockManager(bad as never)).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT" }),
      );
    }
  });

  it("managers over one backend instance and namespace see each other: query() lists both, a steal evicts at once", async () => {
    const backend = memoryBackend();
    const namespace = `wl-${Math.random()}`;
    const a = createLocks(backend, { namespace });
    const b = createLocks(backend, { namespace });
    const other = createLocks(backend, { namespace: `${namespace}-other` });
    const [ma, mb, mo] = [a, b, other].map(createLockManager) as [
      ReturnType<typeof createLockManager>,
      ReturnType<typeof createLockManager>,
      ReturnType<typeof createLockManager>,
    ];
    let granted!: () => void;
    const held = new Promise<void>((r) => {
      granted = r;
    });
    const victim = rejection(
      ma.request("res", () => {
        granted();
        return new Promise(() => {});
      }),
    );
    await held;
    // Another namespace is another lock, and another snapshot.
    expect(await mo.request("res", { ifAvailable: true }, (lock) => lock !== null)).toBe(true);
    expect((await mo.query()).held).toEqual([]);
    expect((await mb.query()).held).toEqual([
      { name: "res", mode: "exclusive", clientId: ma.clientId },
    ]);
    const stolen = mb.request("res", { steal: true }, () => "mine");
    const error = (await victim) as DOMException;
    expect(error.name).toBe("AbortError");
    expect(error.cause).toBeUndefined(); // evicted by the thief's manager itself, not through the backend
    expect(await stolen).toBe("mine");
    await Promise.all([a.close(), b.close(), other.close()]);
  });

  it("shared mode over a backend without the shared capability rejects with INVALID_ARGUMENT", async () => {
    const locks = createLocks(recorded());
    const manager = createLockManager(locks);
    const error = await rejection(manager.request("res", { mode: "shared" }, () => 1));
    expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(await manager.request("res", () => "exclusive still works")).toBe(
      "exclusive still works",
    );
    await locks.close();
  });

  it("steal over a backend without forceRelease rejects with INVALID_ARGUMENT and evicts nothing", async () => {
    const locks = createLocks(recorded());
    const manager = createLockManager(locks);
    let release!: () => void;
    let granted!: () => void;
    const held = new Promise<void>((r) => {
      granted = r;
    });
    const holder = manager.request("res", () => {
      granted();
      return new Promise<string>((r) => {
        release = () => r("kept");
      });
    });
    await held;
    const error = await rejection(manager.request("res", { steal: true }, () => 1));
    expect(error).toMatchObject({ code: "INVALID_ARGUMENT" });
    release();
    expect(await holder).toBe("kept");
    await locks.close();
  });
});
