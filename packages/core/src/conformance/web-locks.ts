import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import type { LocksOptions } from "../locks.js";
import {
  createLockManager,
  type LockManager,
  type LockManagerRequestOptions,
  type WebLock,
} from "../web-locks.js";
import { Harness } from "./harness.js";
import type { Optional } from "./holders.js";
import type { ConformanceOptions } from "./options.js";

/**
 * The Web Locks API (`createLockManager`) over the backend: the cases whose
 * outcome the store decides, between managers over separate instances (as
 * separate processes would have). The API's own rules (argument checks,
 * queue order within one manager, query shapes) are the core's tests.
 */
export function webLockTests(
  options: ConformanceOptions,
  capabilities: Capabilities,
  optional: Optional,
): void {
  describe("Web Locks (createLockManager)", () => {
    it("managers over two instances exclude each other: ifAvailable gets null, a waiter is granted once the callback settles", async () => {
      const h = new Harness(options);
      const [a, b] = await managers(h, 2);
      const held = holdLock(a, "res");
      const first = await held.granted;
      expect(await b.request("res", { ifAvailable: true }, (lock) => lock)).toBeNull();
      const events: string[] = [];
      const waiting = b.request("res", (lock) => {
        events.push("b granted");
        return lock?.fencingToken;
      });
      // query() lists this process's managers over one instance: each sees its own requests.
      expect(await a.query()).toEqual({
        held: [{ name: "res", mode: "exclusive", clientId: a.clientId }],
        pending: [],
      });
      expect(await b.query()).toEqual({
        held: [],
        pending: [{ name: "res", mode: "exclusive", clientId: b.clientId }],
      });
      events.push("a releases");
      held.release("first");
      expect(await held.done).toBe("first");
      const token = await waiting;
      expect(events).toEqual(["a releases", "b granted"]);
      if (capabilities.fencing) expect(token).toBeGreaterThan(first!.fencingToken);
    });

    it("a Web Lock and locks.acquire on another instance exclude each other", async () => {
      const h = new Harness(options);
      const [locks, other] = await h.clients(2);
      const m = createLockManager(locks!);
      const held = holdLock(m, "job");
      await held.granted;
      expect(await other!.tryAcquire("job")).toBeNull();
      held.release();
      await held.done;
      const lease = await other!.acquire("job", { timeoutMs: 30_000 });
      expect(await m.request("job", { ifAvailable: true }, (lock) => lock)).toBeNull();
      const waiting = m.request("job", (lock) => lock?.name);
      await lease.release();
      expect(await waiting).toBe("job");
    });

    it.skipIf(!capabilities.shared)(
      "shared locks of two instances are held together; an exclusive one waits for both, and its release grants both again (shared)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await managers(h, 3);
        const readerA = holdLock(a, "res", { mode: "shared" });
        await readerA.granted;
        // Never granted if A's shared lock excluded it.
        const readerB = holdLock(b, "res", { mode: "shared" });
        expect((await readerB.granted)?.mode).toBe("shared");
        expect(await c.request("res", { ifAvailable: true }, (lock) => lock)).toBeNull();
        let phase = "both read";
        const writer = holdLock(c, "res");
        void writer.granted.then(() => {
          phase = `${phase}, writer granted`;
        });
        phase = "a released";
        readerA.release();
        await readerA.done;
        phase = "b released";
        readerB.release();
        expect((await writer.granted)?.mode).toBe("exclusive");
        expect(phase).toBe("b released, writer granted");
        // Both shared requests wait for the writer, then hold at once.
        let reading = 0;
        let bothIn!: () => void;
        const together = new Promise<void>((resolve) => {
          bothIn = resolve;
        });
        const readers = [a, b].map((m) =>
          m.request("res", { mode: "shared" }, async () => {
            if (++reading === 2) bothIn();
            await together; // never settles unless both hold at once
          }),
        );
        writer.release();
        await writer.done;
        await Promise.all(readers);
      },
    );

    it.skipIf(!optional.forceRelease)(
      "a steal from another instance evicts the holder: its request rejects with AbortError (cause LOCK_LOST), its signal aborts, the thief's token is higher (forceRelease)",
      async () => {
        const h = new Harness(options);
        // The TTL of the test: where only the watchdog's refused extend tells the victim, it tells soon.
        const [a, b] = await managers(h, 2, { ttlMs: h.ttlMs });
        const victim = holdLock(a, "res");
        const lock = await victim.granted;
        const thief = holdLock(b, "res", { steal: true });
        const stolen = await thief.granted;
        const error = await rejection(victim.done);
        expect(domError(error)).toBe("AbortError");
        expect((error as Error).cause).toMatchObject({ code: "LOCK_LOST" });
        expect(lock!.signal.aborted).toBe(true);
        if (capabilities.fencing) expect(stolen!.fencingToken).toBeGreaterThan(lock!.fencingToken);
        // The victim's manager moves on: its next request waits for the thief.
        expect(await a.request("res", { ifAvailable: true }, (l) => l)).toBeNull();
        const next = a.request("res", () => "next");
        thief.release();
        expect(await next).toBe("next");
      },
    );

    it("aborting a request that waits for another instance's lock rejects it with the reason; the next request is not blocked", async () => {
      const h = new Harness(options);
      const [a, b] = await managers(h, 2);
      const held = holdLock(a, "res");
      await held.granted;
      const controller = new AbortController();
      let ran = false;
      const aborted = b.request("res", { signal: controller.signal }, () => {
        ran = true;
      });
      const after = b.request("res", () => "after");
      const reason = new Error("gave up");
      controller.abort(reason);
      expect(await rejection(aborted)).toBe(reason);
      expect((await b.query()).pending).toEqual([
        { name: "res", mode: "exclusive", clientId: b.clientId },
      ]);
      held.release();
      expect(await after).toBe("after");
      expect(ran).toBe(false);
    });
  });
}

/** `n` managers, each over a client of its own backend instance. */
async function managers(
  h: Harness,
  n: 2,
  options?: LocksOptions,
): Promise<[LockManager, LockManager]>;
async function managers(
  h: Harness,
  n: 3,
  options?: LocksOptions,
): Promise<[LockManager, LockManager, LockManager]>;
async function managers(h: Harness, n: number, options?: LocksOptions): Promise<LockManager[]> {
  return (await h.clients(n, options)).map((locks) => createLockManager(locks));
}

/** A request that holds its lock until `release()`; its outcome is caught (`done`). */
export interface HeldRequest {
  readonly granted: Promise<WebLock | null>;
  readonly done: Promise<unknown>;
  release(value?: unknown): void;
}

/** Requests `name` with a callback that keeps the lock until `release()` is called. */
export function holdLock(
  manager: LockManager,
  name: string,
  options: LockManagerRequestOptions = {},
): HeldRequest {
  let granted!: (lock: WebLock | null) => void;
  let release!: (value: unknown) => void;
  const grant = new Promise<WebLock | null>((resolve) => {
    granted = resolve;
  });
  const released = new Promise<unknown>((resolve) => {
    release = resolve;
  });
  const done = manager.request(name, options, (lock) => {
    granted(lock);
    return released;
  });
  done.catch(() => undefined);
  return { granted: grant, done, release: (value) => release(value) };
}

/** The rejection reason of `promise` (fails the test if it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection, the promise resolved");
}

/** The name of a DOMException, or what else it was. */
export function domError(error: unknown): string {
  return error instanceof DOMException ? error.name : `not a DOMException: ${String(error)}`;
}
