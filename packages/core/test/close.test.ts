import { describe, expect, it } from "vitest";
import { createLocks } from "../src/index.js";
import { recorded } from "./unit/backend.js";

/** A promise that never settles: a server that stopped answering (SIGSTOP). */
const never = <T>(): Promise<T> => new Promise<T>(() => {});

function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => "resolved",
    (error: { code?: string }) => error.code ?? String(error),
  );
}

describe("close()", { timeout: 5_000 }, () => {
  it("rejects an acquire whose first attempt is in flight with LOCK_CLOSED at once", async () => {
    const backend = recorded({ tryAcquire: () => never() });
    const locks = createLocks(backend);
    // Neither timeoutMs nor signal: the hot path, which only close() can end.
    const outcomes = [
      codeOf(locks.acquire("stuck")),
      codeOf(locks.tryAcquire("stuck")),
      codeOf(locks.withLock("stuck", () => 1)),
    ];
    const started = performance.now();
    await locks.close();
    expect(await Promise.all(outcomes)).toEqual(["LOCK_CLOSED", "LOCK_CLOSED", "LOCK_CLOSED"]);
    expect(performance.now() - started, "close() and the rejections, in ms").toBeLessThan(1_000);
  });

  it("does not wait for releases a dead server never answers", async () => {
    let closed = false;
    const backend = recorded({
      release: () => never(),
      async close() {
        closed = true;
      },
    });
    const locks = createLocks(backend);
    const lease = await locks.acquire("held");
    await locks.close();
    expect(closed).toBe(true);
    expect((lease.signal.reason as { code?: string }).code).toBe("LOCK_RELEASED");
  });

  it("hands back a grant that arrives while it waits, before closing the backend", async () => {
    let grant: (() => void) | undefined;
    const backend = recorded({
      tryAcquire: (req) =>
        new Promise((resolve) => {
          backend.tried.push(req);
          grant = () => resolve({ granted: true, fencingToken: 1n, hold: "late hold" });
        }),
    });
    const locks = createLocks(backend);
    const outcome = codeOf(locks.acquire("late"));
    const closing = locks.close();
    expect(await outcome).toBe("LOCK_CLOSED");
    grant?.();
    await closing;
    expect(backend.released.map((r) => r.owner)).toEqual(backend.tried.map((r) => r.owner));
    expect(backend.releasedHolds).toEqual(["late hold"]);
  });
});
