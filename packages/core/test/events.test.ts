import { subscribe, unsubscribe } from "node:diagnostics_channel";
import { afterEach, describe, expect, it } from "vitest";
import { createLocks, LOCK_CHANNELS } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";

type Seen = Array<[string, Record<string, unknown>]>;

function listen(): Seen {
  const seen: Seen = [];
  for (const name of Object.values(LOCK_CHANNELS)) {
    const fn = (message: unknown): void => {
      seen.push([name, message as Record<string, unknown>]);
    };
    subscribe(name, fn);
    stops.push(() => unsubscribe(name, fn));
  }
  return seen;
}

const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

describe("diagnostics_channel events", () => {
  it("publishes the life of a lease: start, granted, extend, release", async () => {
    const seen = listen();
    const locks = createLocks(memoryBackend(), { namespace: "events" });
    const lease = await locks.acquire("k", { ttlMs: 5_000 });
    await lease.extend();
    await lease.release();
    await locks.close();
    expect(seen.map(([name]) => name)).toEqual([
      "locks:acquire:start",
      "locks:acquire:granted",
      "locks:extend",
      "locks:release",
    ]);
    const granted = seen[1]![1];
    expect(granted).toMatchObject({
      key: "k",
      namespace: "events",
      backend: "memory",
      mode: "exclusive",
      limit: 1,
    });
    expect(granted.fencingToken).toBe(lease.fencingToken);
    expect(granted.waitMs).toBeTypeOf("number");
    expect(seen[2]![1]).toMatchObject({ ok: true, fencingToken: lease.fencingToken });
    expect(seen[3]![1].heldMs).toBeGreaterThanOrEqual(0);
  });

  it("tells busy, timeout, aborted and lost apart", async () => {
    const locks = createLocks(memoryBackend(), { namespace: "events-2" });
    const held = await locks.acquire("k", { ttlMs: 80, autoExtend: false });
    const seen = listen();
    expect(await locks.tryAcquire("k")).toBeNull();
    await expect(locks.acquire("k", { timeoutMs: 10 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    const reason = new Error("stop");
    await expect(locks.acquire("k", { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    const controller = new AbortController();
    const waiting = locks.acquire("k", { signal: controller.signal });
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    await new Promise((resolve) => held.signal.addEventListener("abort", resolve));
    await locks.close();
    const names = seen.map(([name]) => name).filter((n) => n !== "locks:acquire:start");
    expect(names).toEqual([
      "locks:acquire:busy",
      "locks:acquire:timeout",
      "locks:acquire:aborted",
      "locks:lost",
    ]);
    expect(seen.find(([n]) => n === "locks:acquire:aborted")![1].error).toBe(reason);
    expect((seen.find(([n]) => n === "locks:lost")![1].error as { code: string }).code).toBe(
      "LOCK_LOST",
    );
  });
});
