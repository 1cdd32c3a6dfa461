import { describe, expect, it, vi } from "vitest";
import { type Backend, createLocks, type Lease } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";

const namespace = (): string => `election-${Math.random()}`;

/** The memory backend, whose first `failures` attempts fail as an unreachable server's would. */
function failingFirst(failures: number): Backend {
  const backend = memoryBackend();
  const tryAcquire = backend.tryAcquire.bind(backend);
  let left = failures;
  backend.tryAcquire = async (request) => {
    if (left-- > 0) throw new Error("connect ECONNREFUSED 127.0.0.1:1");
    return tryAcquire(request);
  };
  return backend;
}

describe("election and lead, in the core", () => {
  it("lead() waits out an unavailable backend and leads once it answers", async () => {
    const locks = createLocks(failingFirst(3), { namespace: namespace() });
    const stop = new AbortController();
    let term: Lease | undefined;
    const leading = locks.lead(
      "retried",
      async (t) => {
        term = t;
        stop.abort();
      },
      { signal: stop.signal },
    );
    await leading;
    expect(term).toBeDefined();
    await locks.close();
  });

  it("lead() and observe() reject with LOCK_CLOSED when the client closes under them", async () => {
    const locks = createLocks(memoryBackend(), { namespace: namespace() });
    const other = createLocks(memoryBackend(), { namespace: locks.namespace });
    const held = await other.acquire("busy");
    const leading = locks.lead("busy", () => {});
    let observed = 0;
    const observing = (async () => {
      for await (const _ of locks.election("busy").observe()) observed++;
    })();
    // observe() has reported the leader: both are under way.
    await vi.waitFor(() => expect(observed).toBe(1));
    await locks.close();
    await expect(leading).rejects.toMatchObject({ code: "LOCK_CLOSED" });
    await expect(observing).rejects.toMatchObject({ code: "LOCK_CLOSED" });
    expect(() => locks.election("busy")).toThrow(expect.objectContaining({ code: "LOCK_CLOSED" }));
    await held.release();
    await other.close();
  });

  it("lead() campaigns again after fn returns, and resolves at once for an aborted signal", async () => {
    const locks = createLocks(memoryBackend(), { namespace: namespace() });
    const stop = new AbortController();
    let terms = 0;
    await locks.lead(
      "again",
      () => {
        if (++terms === 3) stop.abort();
      },
      { signal: stop.signal },
    );
    expect(terms).toBe(3);
    await locks.lead("again", () => expect.unreachable(), { signal: stop.signal });
    await locks.close();
  });

  it("forceRelease() marks this client's own leases of the key lost at once", async () => {
    const locks = createLocks(memoryBackend(), { namespace: namespace() });
    const lease = await locks.acquire("mine", { ttlMs: 60_000 });
    expect(await locks.forceRelease("mine")).toBe(true);
    expect(lease.signal.aborted).toBe(true);
    expect(lease.signal.reason).toMatchObject({ code: "LOCK_LOST" });
    await locks.close();
  });

  it("forceRelease() leaves alone a lease of this client granted while it ran", async () => {
    const backend = memoryBackend();
    const locks = createLocks(backend, { namespace: namespace() });
    const other = createLocks(memoryBackend(), { namespace: locks.namespace });
    const evicted = await other.acquire("k", { ttlMs: 60_000 });
    let granted: Lease | undefined;
    const waiting = locks.acquire("k", { ttlMs: 60_000, timeoutMs: 10_000 }).then((lease) => {
      granted = lease;
    });
    // The eviction lets this client's waiter in before the call returns, as a server's queue would.
    const forceRelease = backend.forceRelease?.bind(backend);
    backend.forceRelease = async (key) => {
      const freed = (await forceRelease?.(key)) ?? false;
      await vi.waitFor(() => expect(granted).toBeDefined());
      return freed;
    };
    expect(await locks.forceRelease("k")).toBe(true);
    await waiting;
    expect(granted?.signal.aborted).toBe(false);
    await granted?.extend(); // still the holder: extend() rejects with LOCK_LOST otherwise
    await locks.close();
    await other.close();
    expect(evicted.signal.aborted).toBe(true);
  });

  it("inspect and forceRelease on a backend without them: INVALID_ARGUMENT naming the method", async () => {
    const backend = memoryBackend();
    delete (backend as Partial<Backend>).inspect;
    delete (backend as Partial<Backend>).forceRelease;
    const locks = createLocks(backend, { namespace: namespace() });
    await expect(locks.inspect("k")).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringContaining("inspect"),
    });
    await expect(locks.forceRelease("k")).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: expect.stringContaining("forceRelease"),
    });
    await locks.close();
  });

  it("lead() keeps the process alive while it runs, over a backend with no socket", async () => {
    const locks = createLocks(memoryBackend(), { namespace: namespace() });
    const timers = (): number =>
      process.getActiveResourcesInfo().filter((kind) => kind === "Timeout").length;
    const before = timers();
    const stop = new AbortController();
    let during = -1;
    await locks.lead(
      "alive",
      () => {
        during = timers();
        stop.abort();
      },
      { signal: stop.signal },
    );
    expect(during).toBeGreaterThan(before);
    expect(timers()).toBe(before);
    await locks.close();
  });

  it("lead() returns only once a grant still in flight when its signal aborted is handed back", async () => {
    const ns = namespace();
    const slow = memoryBackend();
    const tryAcquire = slow.tryAcquire.bind(slow);
    // The store grants after 100 ms: the signal aborts while the attempt is on its way.
    let inFlight = 0;
    slow.tryAcquire = async (request) => {
      inFlight++;
      await new Promise((resolve) => setTimeout(resolve, 100));
      const attempt = await tryAcquire(request);
      inFlight--;
      return attempt;
    };
    const locks = createLocks(slow, { namespace: ns });
    const other = createLocks(memoryBackend(), { namespace: ns });
    const stop = new AbortController();
    const leading = locks.lead("late", () => expect.unreachable(), { signal: stop.signal });
    setTimeout(() => stop.abort(), 30);
    await leading;
    expect(inFlight, "the campaign's attempt has come back").toBe(0);
    expect((await other.inspect("late")).holders).toEqual([]);
    await Promise.all([locks.close(), other.close()]);
  });
});
