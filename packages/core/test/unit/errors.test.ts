import { describe, expect, it } from "vitest";
import { isLockError, LockError, LockLostError, LockTimeoutError } from "../../src/index.js";
import {
  backendUnavailable,
  driftAllowance,
  invalidArgument,
  limitMismatch,
  lockClosed,
  monotonicNow,
  newOwnerToken,
  onAbort,
  socketErrorWords,
} from "../../src/toolkit/index.js";

describe("errors", () => {
  it("carry a stable code, a name and the cause", () => {
    const cause = new Error("socket hang up");
    const base = new LockError("LOCK_RELEASED", "gone", { cause });
    expect(base).toBeInstanceOf(Error);
    expect([base.name, base.code, base.message, base.cause]).toEqual([
      "LockError",
      "LOCK_RELEASED",
      "gone",
      cause,
    ]);
    const timeout = new LockTimeoutError("waited");
    expect([timeout.name, timeout.code, timeout.message]).toEqual([
      "LockTimeoutError",
      "LOCK_TIMEOUT",
      "waited",
    ]);
    const lost = new LockLostError("lost it", { cause });
    expect([lost.name, lost.code, lost.message, lost.cause]).toEqual([
      "LockLostError",
      "LOCK_LOST",
      "lost it",
      cause,
    ]);
  });

  it("are built with messages that say what happened", () => {
    expect(invalidArgument("ttlMs", "is wrong")).toMatchObject({
      code: "INVALID_ARGUMENT",
      message: "ttlMs is wrong",
    });
    expect(limitMismatch(3, 2)).toMatchObject({
      code: "INVALID_ARGUMENT",
      message: "limit 3 differs from the limit 2 that the key's current holders use",
    });
    const cause = new Error("ECONNREFUSED");
    expect(backendUnavailable("redis", cause)).toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      message: "redis backend unavailable: ECONNREFUSED",
      cause,
    });
    expect(backendUnavailable("etcd", "no leader").message).toBe(
      "etcd backend unavailable: no leader",
    );
    expect(lockClosed()).toMatchObject({
      code: "LOCK_CLOSED",
      message: "the locks client was closed",
    });
    expect(lockClosed("redis backend").message).toBe("the redis backend was closed");
  });

  it("are recognised by code, across copies of the library", () => {
    const codes = [
      "LOCK_TIMEOUT",
      "LOCK_LOST",
      "INVALID_ARGUMENT",
      "BACKEND_UNAVAILABLE",
      "LOCK_CLOSED",
      "LOCK_RELEASED",
    ] as const;
    for (const code of codes) {
      // A plain object with the code: what an error from another copy looks like.
      expect(isLockError({ code }), code).toBe(true);
      expect(isLockError({ code }, code), code).toBe(true);
      expect(isLockError({ code }, code === "LOCK_LOST" ? "LOCK_TIMEOUT" : "LOCK_LOST")).toBe(
        false,
      );
    }
    expect(isLockError(new LockTimeoutError("t"), "LOCK_TIMEOUT")).toBe(true);
    expect(isLockError({ code: "ENOENT" })).toBe(false);
    expect(isLockError({ code: 5 })).toBe(false);
    expect(isLockError({})).toBe(false);
    expect(isLockError(null)).toBe(false);
    expect(isLockError("LOCK_LOST")).toBe(false);
    expect(isLockError(undefined)).toBe(false);
  });
});

describe("clock and owners", () => {
  it("allows 1% of the TTL plus 2 ms of drift, rounded up", () => {
    expect(driftAllowance(30_000)).toBe(302);
    expect(driftAllowance(100)).toBe(3);
    expect(driftAllowance(150)).toBe(4);
    expect(driftAllowance(10)).toBe(3);
  });

  it("measures on the monotonic clock", () => {
    const before = performance.now();
    const now = monotonicNow();
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(performance.now());
  });

  it("draws distinct 128-bit owner tokens, across refills of its pool", () => {
    const tokens = Array.from({ length: 1_000 }, () => newOwnerToken());
    for (const token of tokens) expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(new Set(tokens).size).toBe(tokens.length);
  });
});

describe("onAbort", () => {
  it("listens again on a signal after every earlier wait stopped", () => {
    const controller = new AbortController();
    onAbort(controller.signal, () => {})();
    const seen: unknown[] = [];
    onAbort(controller.signal, (reason) => seen.push(reason));
    controller.abort("late");
    expect(seen).toEqual(["late"]);
  });

  it("keeps listening for the waits left when one stops", () => {
    const controller = new AbortController();
    const seen: string[] = [];
    const stopA = onAbort(controller.signal, () => seen.push("a"));
    onAbort(controller.signal, () => seen.push("b"));
    stopA();
    stopA();
    controller.abort();
    expect(seen).toEqual(["b"]);
  });

  it("skips a callback that an earlier one stopped while the abort was dispatched", () => {
    const controller = new AbortController();
    const seen: string[] = [];
    let stopB = (): void => {};
    onAbort(controller.signal, () => {
      seen.push("a");
      stopB();
    });
    stopB = onAbort(controller.signal, () => seen.push("b"));
    onAbort(controller.signal, () => seen.push("c"));
    controller.abort();
    expect(seen).toEqual(["a", "c"]);
  });

  it("starts afresh on a signal whose listener already ran", () => {
    const controller = new AbortController();
    const seen: unknown[] = [];
    onAbort(controller.signal, () => seen.push(1));
    controller.abort("x");
    // Aborted signals call back at once, and stopping is a no-op.
    const stop = onAbort(controller.signal, (reason) => seen.push(reason));
    stop();
    expect(seen).toEqual([1, "x"]);
  });
});

describe("socketErrorWords", () => {
  it("says a socket error code in plain words, and nothing for another code", () => {
    expect(socketErrorWords("ECONNREFUSED")).toBe("connection refused");
    expect(socketErrorWords("ENOTFOUND")).toBe("host not found");
    expect(socketErrorWords("NOPE")).toBeUndefined();
  });
});
