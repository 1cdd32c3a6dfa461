/*
 * The Web Platform Tests' web-locks cases (web-platform-tests/wpt, folder
 * web-locks/), rewritten from their assertions for `createLockManager`, run
 * once over the memory backend: the API's own rules (arguments, queue order
 * within a manager, query). What a backend decides (other instances, steals
 * and losses across them) is the conformance suite's "Web Locks" group, which
 * every backend runs.
 *
 * Not covered, as they need a browser: frames, workers, service workers,
 * navigation and origins (clients.https.*, frames.https.*, opaque-origin.*,
 * partitioned-*, secure-context.*, non-fully-active.*, bfcache/*,
 * release-following-termination.*, storage-buckets.*, workers.https.*,
 * lock-attributes' IDL interface checks, interfaces.idl). Where a case needs
 * "another context", a second manager stands in for it.
 */
import { afterEach, describe, expect, it } from "vitest";
import { domError, holdLock, rejection } from "../src/conformance/web-locks.js";
import {
  createLockManager,
  createLocks,
  type LockManager,
  type LockManagerRequestOptions,
  type Locks,
  type LocksOptions,
  type WebLock,
} from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const NEVER = new Promise<never>(() => {});

describe("W3C Web Locks cases (wpt web-locks/), memory backend", () => {
  const clients: Locks[] = [];
  let count = 0;

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
  });

  /** A manager over a client in a fresh namespace (the memory store outlives its instances). */
  function fresh(options: LocksOptions = {}): LockManager {
    const namespace = `wl-${process.pid}-${++count}`;
    const locks = createLocks(memoryBackend(), { ...options, namespace });
    clients.push(locks);
    return createLockManager(locks);
  }

  describe("acquire.https.any.js", () => {
    it("a request without a function callback is a TypeError", async () => {
      const m = fresh();
      const request = m.request as (...args: unknown[]) => Promise<unknown>;
      expect(await rejection(request.call(m))).toBeInstanceOf(TypeError);
      expect(await rejection(request.call(m, "res"))).toBeInstanceOf(TypeError);
      for (const bad of [undefined, null, 123, "abc", {}, true]) {
        expect(await rejection(request.call(m, "res", bad))).toBeInstanceOf(TypeError);
        expect(await rejection(request.call(m, "res", {}, bad))).toBeInstanceOf(TypeError);
      }
    });

    it("mode must be 'shared' or 'exclusive'; options must be a dictionary", async () => {
      const m = fresh();
      const request = m.request as (...args: unknown[]) => Promise<unknown>;
      for (const mode of ["foo", null, "EXCLUSIVE"]) {
        expect(await rejection(request.call(m, "res", { mode }, () => 1))).toBeInstanceOf(
          TypeError,
        );
      }
      expect(await rejection(request.call(m, "res", 5, () => 1))).toBeInstanceOf(TypeError);
    });

    it("option combinations the spec forbids are NotSupportedError", async () => {
      const m = fresh();
      const signal = new AbortController().signal;
      const bad: LockManagerRequestOptions[] = [
        { steal: true, ifAvailable: true },
        { steal: true, mode: "shared" },
        { signal, steal: true },
        { signal, ifAvailable: true },
      ];
      for (const options of bad) {
        expect(domError(await rejection(m.request("res", options, () => 1)))).toBe(
          "NotSupportedError",
        );
      }
    });

    it("the callback runs after request() returns, with the lock", async () => {
      const m = fresh();
      let called = false;
      const done = m.request("res", (lock) => {
        called = true;
        expect(lock).toMatchObject({ name: "res", mode: "exclusive" });
        expect(typeof lock?.fencingToken).toBe("bigint");
      });
      expect(called).toBe(false);
      await done;
      expect(called).toBe(true);
    });

    it("request resolves with the callback's result, or rejects with what it threw", async () => {
      const m = fresh();
      expect(await m.request("res", () => 123)).toBe(123);
      expect(await m.request("res", async () => "async")).toBe("async");
      const error = new Error("sync");
      expect(
        await rejection(
          m.request("res", () => {
            throw error;
          }),
        ),
      ).toBe(error);
      expect(await rejection(m.request("res", () => Promise.reject(error)))).toBe(error);
      // The lock was released each time.
      expect(await m.request("res", { ifAvailable: true }, (lock) => lock !== null)).toBe(true);
    });

    it("requests for distinct names are granted while one is held", async () => {
      const m = fresh();
      const first = holdLock(m, "res1");
      await first.granted;
      expect(await m.request("res2", (lock) => lock?.name)).toBe("res2");
      first.release();
      await first.done;
    });
  });

  describe("lock-attributes.https.any.js", () => {
    it("the lock reflects the requested name and mode", async () => {
      const m = fresh();
      await m.request("res", (lock) => expect(lock).toMatchObject({ mode: "exclusive" }));
      await m.request("res", { mode: "shared" }, (lock) =>
        expect(lock).toMatchObject({ name: "res", mode: "shared" }),
      );
    });
  });

  describe("mode-exclusive.https.any.js", () => {
    it("requests are granted in order", async () => {
      const m = fresh();
      const granted: number[] = [];
      await Promise.all(
        [1, 2, 3].map((n) =>
          m.request("res", async () => {
            granted.push(n);
          }),
        ),
      );
      expect(granted).toEqual([1, 2, 3]);
    });

    it("a held exclusive lock blocks the next request until the callback's promise settles", async () => {
      const m = fresh();
      const first = holdLock(m, "res");
      await first.granted;
      let second = false;
      const next = m.request("res", () => {
        second = true;
      });
      const snapshot = await m.query();
      expect(snapshot.held.map((l) => l.name)).toEqual(["res"]);
      expect(snapshot.pending.map((l) => l.name)).toEqual(["res"]);
      expect(second).toBe(false);
      first.release();
      await next;
      expect(second).toBe(true);
    });
  });

  describe("mode-shared.https.any.js", () => {
    it("shared locks are not exclusive", async () => {
      const m = fresh();
      let again = false;
      // Would wait forever if the first shared lock excluded the second.
      await m.request("res", { mode: "shared" }, async () => {
        await m.request("res", { mode: "shared" }, () => {
          again = true;
        });
      });
      expect(again).toBe(true);
    });

    it("requests are granted in order", async () => {
      const m = fresh();
      const granted: string[] = [];
      await Promise.all(
        ["a-1", "b-1", "a-2", "b-2"].map((n) =>
          m.request(n.slice(0, 1), { mode: "shared" }, () => {
            granted.push(n);
          }),
        ),
      );
      expect(granted).toEqual(["a-1", "b-1", "a-2", "b-2"]);
    });
  });

  describe("mode-mixed.https.any.js", () => {
    it("requests are granted in order: held shared locks block an exclusive one, not another name", async () => {
      const m = fresh();
      const granted: string[] = [];
      const unblock = deferred();
      const shared = [1, 2, 3].map((n) =>
        m.request("a", { mode: "shared" }, async () => {
          granted.push(`a-shared-${n}`);
          await unblock.promise;
        }),
      );
      let exclusiveLock: WebLock | null = null;
      const exclusive = m.request("a", async (lock) => {
        granted.push("a-exclusive");
        exclusiveLock = lock;
      });
      await expect.poll(() => granted.length).toBe(3);
      await m.request("b", () => {
        granted.push("b-exclusive");
      });
      expect(granted).toEqual(["a-shared-1", "a-shared-2", "a-shared-3", "b-exclusive"]);
      unblock.resolve();
      await Promise.all([...shared, exclusive]);
      expect(exclusiveLock).toMatchObject({ mode: "exclusive" });
      expect(granted.at(-1)).toBe("a-exclusive");
    });

    it("releasing an exclusive lock grants the shared requests behind it together", async () => {
      const m = fresh();
      const writer = holdLock(m, "res");
      await writer.granted;
      const both = deferred();
      let inside = 0;
      const readers = [1, 2].map(() =>
        m.request("res", { mode: "shared" }, async () => {
          if (++inside === 2) both.resolve();
          await both.promise; // both hold at once, or this never settles
        }),
      );
      writer.release();
      await Promise.all(readers);
    });

    it("a queued exclusive request blocks a later shared one, even while shared locks are held", async () => {
      const m = fresh();
      const order: string[] = [];
      const reader = holdLock(m, "res", { mode: "shared" });
      await reader.granted;
      const writer = m.request("res", () => {
        order.push("exclusive");
      });
      const later = m.request("res", { mode: "shared" }, () => {
        order.push("shared");
      });
      const state = await m.query();
      expect(state.pending.map((l) => l.mode)).toEqual(["exclusive", "shared"]);
      reader.release();
      await Promise.all([writer, later]);
      expect(order).toEqual(["exclusive", "shared"]);
    });
  });

  describe("ifAvailable.https.any.js", () => {
    it("lock available: the callback gets the lock", async () => {
      const m = fresh();
      expect(await m.request("res", { ifAvailable: true }, (lock) => lock?.name)).toBe("res");
    });

    it("lock not available: the callback gets null and request resolves with its result", async () => {
      const m = fresh();
      await m.request("res", async () => {
        const result = await m.request("res", { ifAvailable: true }, async (lock) => {
          expect(lock).toBeNull();
          return 123;
        });
        expect(result).toBe(123);
      });
    });

    it("lock not available: a callback that throws rejects the request", async () => {
      const m = fresh();
      await m.request("res", async () => {
        const thrown = m.request("res", { ifAvailable: true }, () => {
          throw 123;
        });
        expect(await rejection(thrown)).toBe(123);
      });
    });

    it("locks are available once the previous release is complete", async () => {
      const m = fresh();
      await m.request("res", () => undefined);
      expect(await m.request("res", { ifAvailable: true }, (lock) => lock !== null)).toBe(true);
    });

    it("a queued request blocks an ifAvailable request", async () => {
      const m = fresh();
      const first = holdLock(m, "res");
      await first.granted;
      const queued = m.request("res", () => "queued");
      first.release();
      // The queued request is ahead of it: not grantable at once, even if nothing is held.
      expect(await m.request("res", { ifAvailable: true }, (lock) => lock)).toBeNull();
      expect(await queued).toBe("queued");
    });

    it("another name, and a shared lock while only shared locks are held, are available", async () => {
      const m = fresh();
      await m.request("res", async () => {
        expect(await m.request("other", { ifAvailable: true }, (l) => l?.name)).toBe("other");
      });
      await m.request("res", { mode: "shared" }, async () => {
        const lock = await m.request("res", { mode: "shared", ifAvailable: true }, (l) => l);
        expect(lock?.mode).toBe("shared");
      });
    });

    it("a queued exclusive request blocks a shared ifAvailable request", async () => {
      const m = fresh();
      const reader = holdLock(m, "res", { mode: "shared" });
      await reader.granted;
      const writer = m.request("res", () => "written");
      const lock = await m.request("res", { mode: "shared", ifAvailable: true }, (l) => l);
      expect(lock).toBeNull();
      reader.release();
      expect(await writer).toBe("written");
    });
  });

  describe("held.https.any.js", () => {
    it("the lock is held until the callback's promise settles, then released", async () => {
      const m = fresh();
      const first = holdLock(m, "res");
      await first.granted;
      expect(await m.request("res", { ifAvailable: true }, (l) => l)).toBeNull();
      first.release("value");
      expect(await first.done).toBe("value");
      expect(await m.request("res", { ifAvailable: true }, (l) => l !== null)).toBe(true);
    });

    it("a rejected callback promise releases the lock too", async () => {
      const m = fresh();
      await rejection(m.request("res", () => Promise.reject(new Error("x"))));
      expect(await m.request("res", { ifAvailable: true }, (l) => l !== null)).toBe(true);
    });
  });

  describe("steal.https.any.js", () => {
    it("lock available: granted", async () => {
      const m = fresh();
      expect(await m.request("res", { steal: true }, (lock) => lock?.name)).toBe("res");
    });

    it("lock not available: granted, and the broken lock's request rejects with AbortError", async () => {
      const m = fresh();
      const victim = holdLock(m, "res");
      await victim.granted;
      expect(await m.request("res", { steal: true }, (lock) => lock !== null)).toBe(true);
      expect(domError(await rejection(victim.done))).toBe("AbortError");
    });

    it("the stolen lock's signal aborts; its later settling frees nothing", async () => {
      const m = fresh();
      const victim = holdLock(m, "res");
      const lock = await victim.granted;
      const thief = holdLock(m, "res", { steal: true });
      await thief.granted;
      expect(lock?.signal.aborted).toBe(true);
      victim.release();
      expect(await m.request("res", { ifAvailable: true }, (l) => l)).toBeNull();
      thief.release();
      await thief.done;
    });

    it("the requested lock jumps the queue", async () => {
      const m = fresh();
      const holder = holdLock(m, "res");
      await holder.granted;
      let queuedRan = false;
      const queued = m.request("res", () => {
        queuedRan = true;
      });
      await m.request("res", { steal: true }, () => {
        expect(queuedRan).toBe(false);
      });
      await queued;
      expect(queuedRan).toBe(true);
    });

    it("last caller wins", async () => {
      const m = fresh();
      holdLock(m, "res");
      const firstSteal = rejection(m.request("res", { steal: true }, () => NEVER));
      await m.request("res", { steal: true }, () => undefined);
      expect(domError(await firstSteal)).toBe("AbortError");
    });
  });

  describe("signal.tentative.https.any.js", () => {
    it("the signal option must be an AbortSignal", async () => {
      const m = fresh();
      for (const signal of ["string", 12.34, false, {}, () => {}]) {
        const request = m.request("res", { signal } as LockManagerRequestOptions, () => 1);
        expect(await rejection(request)).toBeInstanceOf(TypeError);
      }
    });

    it("an already aborted signal rejects with its reason", async () => {
      const m = fresh();
      const controller = new AbortController();
      controller.abort();
      const request = m.request("res", { signal: controller.signal }, () => 1);
      expect(domError(await rejection(request))).toBe("AbortError");
      const custom = new Error("why");
      const request2 = m.request("res", { signal: AbortSignal.abort(custom) }, () => 1);
      expect(await rejection(request2)).toBe(custom);
    });

    it("an aborted pending request rejects with AbortError and leaves the queue", async () => {
      const m = fresh();
      const holder = holdLock(m, "res");
      await holder.granted;
      const controller = new AbortController();
      const request = m.request("res", { signal: controller.signal }, () => {
        throw new Error("callback should not run");
      });
      const state = await m.query();
      expect([state.held.length, state.pending.length]).toEqual([1, 1]);
      controller.abort();
      expect(domError(await rejection(request))).toBe("AbortError");
      expect((await m.query()).pending).toEqual([]);
      holder.release();
    });

    it("a synchronously signaled abort wins over a grantable lock; the next request is not blocked", async () => {
      const m = fresh();
      let got = false;
      const controller = new AbortController();
      const request = m.request("res", { signal: controller.signal }, () => {
        got = true;
      });
      controller.abort();
      expect(domError(await rejection(request))).toBe("AbortError");
      expect(got).toBe(false);
      await m.request("res", () => {
        got = true;
      });
      expect(got).toBe(true);
    });

    it("an abort after the grant, or after the release, changes nothing", async () => {
      const m = fresh();
      const controller = new AbortController();
      const held = holdLock(m, "res", { signal: controller.signal });
      await held.granted;
      controller.abort();
      held.release("resolved ok");
      expect(await held.done).toBe("resolved ok");
      const after = new AbortController();
      const done = m.request("res", { signal: after.signal }, () => "ok");
      expect(await done).toBe("ok");
      after.abort();
    });

    it("an abort processes the next pending request", async () => {
      const m = fresh();
      const controller = new AbortController();
      const first = holdLock(m, "res", { signal: controller.signal });
      const next = m.request("res", () => "resolved");
      controller.abort();
      expect(domError(await rejection(first.done))).toBe("AbortError");
      expect(await next).toBe("resolved");
    });
  });

  describe("resource-names.https.any.js", () => {
    it("names are DOMStrings: any text the core accepts as a key, values converted to strings", async () => {
      const m = fresh();
      for (const name of ["a", " ", "\u0000", "\u{1F512}", "x".repeat(1024), "a-", "\uFFFF"]) {
        expect(await m.request(name, (lock) => lock?.name)).toBe(name);
      }
      const request = m.request as (...args: unknown[]) => Promise<unknown>;
      expect(await request.call(m, 123, (lock: WebLock) => lock.name)).toBe("123");
      expect(await rejection(request.call(m, Symbol("s"), () => 1))).toBeInstanceOf(TypeError);
    });

    it("names starting with '-' are NotSupportedError", async () => {
      const m = fresh();
      for (const name of ["-", "-foo", "---"]) {
        expect(domError(await rejection(m.request(name, () => 1)))).toBe("NotSupportedError");
      }
    });

    it("unlike browsers: an empty name, a lone surrogate or > 1024 bytes is the core's INVALID_ARGUMENT", async () => {
      const m = fresh();
      for (const name of ["", "\uD800", "a\uDC00b", "é".repeat(513)]) {
        const error = await rejection(m.request(name, () => 1));
        expect((error as { code?: string }).code).toBe("INVALID_ARGUMENT");
      }
    });
  });

  describe("query-empty.https.any.js, query.https.any.js, query-order.https.any.js", () => {
    it("query() returns empty arrays when nothing is held", async () => {
      const m = fresh();
      expect(await m.query()).toEqual({ held: [], pending: [] });
    });

    it("query() reports held and pending requests with name, mode and clientId", async () => {
      const m = fresh();
      const a = holdLock(m, "a");
      const b = holdLock(m, "b", { mode: "shared" });
      await Promise.all([a.granted, b.granted]);
      const pending = holdLock(m, "a", { mode: "shared" });
      const state = await m.query();
      expect(state.held).toEqual([
        { name: "a", mode: "exclusive", clientId: m.clientId },
        { name: "b", mode: "shared", clientId: m.clientId },
      ]);
      expect(state.pending).toEqual([{ name: "a", mode: "shared", clientId: m.clientId }]);
      expect(typeof m.clientId).toBe("string");
      a.release();
      await pending.granted;
      expect((await m.query()).held.map((l) => l.name)).toEqual(["b", "a"]);
      b.release();
      pending.release();
    });

    it("requests appear in the order made; held locks in the order granted, a steal last", async () => {
      const m = fresh();
      const held = ["r1", "r2", "r3"].map((name) => holdLock(m, name));
      await Promise.all(held.map((h) => h.granted));
      const pending = ["r3", "r1", "r2"].map((name) => holdLock(m, name, { mode: "shared" }));
      const state = await m.query();
      expect(state.held.map((l) => l.name)).toEqual(["r1", "r2", "r3"]);
      expect(state.pending.map((l) => l.name)).toEqual(["r3", "r1", "r2"]);
      const thief = holdLock(m, "r2", { steal: true });
      await thief.granted;
      expect((await m.query()).held.map((l) => l.name)).toEqual(["r1", "r3", "r2"]);
      for (const h of [...held, ...pending, thief]) h.release();
    });

    it("query() lists the requests of every manager over this backend and namespace, each with its clientId", async () => {
      const m1 = fresh();
      const m2 = createLockManager(clients[0] as Locks);
      expect(m1.clientId).not.toBe(m2.clientId);
      // A deadlock the snapshot shows: each holds one name and waits for the other.
      const a = holdLock(m1, "a");
      const b = holdLock(m2, "b");
      await Promise.all([a.granted, b.granted]);
      const ab = holdLock(m1, "b");
      const ba = holdLock(m2, "a");
      await expect.poll(async () => (await m1.query()).pending.length).toBe(2);
      const state = await m2.query();
      expect(state.held).toEqual([
        { name: "a", mode: "exclusive", clientId: m1.clientId },
        { name: "b", mode: "exclusive", clientId: m2.clientId },
      ]);
      expect(state.pending).toEqual([
        { name: "b", mode: "exclusive", clientId: m1.clientId },
        { name: "a", mode: "exclusive", clientId: m2.clientId },
      ]);
      for (const h of [a, b, ab, ba]) h.release();
      await Promise.all([ab.done, ba.done]);
    });
  });

  describe("close() (this library)", () => {
    it("close() of the client rejects the held request with AbortError and the queued ones with LOCK_CLOSED", async () => {
      const m = fresh();
      const held = holdLock(m, "res");
      await held.granted;
      const queued = rejection(m.request("res", () => 1));
      await (clients[0] as Locks).close();
      expect(domError(await rejection(held.done))).toBe("AbortError");
      expect(await queued).toMatchObject({ code: "LOCK_CLOSED" });
    });
  });
});
