import { afterEach, describe, expect, it } from "vitest";
import { createLocks, type Lease, type Locks } from "../../src/index.js";
import type { Attempt, KeyEvent, KeyRef, LockRequest } from "../../src/toolkit/index.js";
import { type Recorded, recorded, until } from "./backend.js";

/*
 * The waiters of one key in one client share one subscription and one poll
 * loop: what a thousand waiters cost the store while nothing happens, and
 * per hand-off, is what one costs.
 */

/** A backend with notifications whose events the test fires, and a hint it chooses. */
function notifying(retryAfterMs?: number): {
  backend: Recorded;
  subscriptions: KeyRef[];
  fire: (event?: KeyEvent) => void;
  free: (key: string) => void;
} {
  const subscriptions: KeyRef[] = [];
  const listeners = new Set<(event?: KeyEvent) => void>();
  const backend = recorded(
    {
      async tryAcquire(request: LockRequest): Promise<Attempt> {
        backend.tried.push(request);
        if (backend.holders.has(request.key)) return { granted: false, retryAfterMs };
        const hold = { key: request.key, owner: request.owner };
        backend.holders.set(request.key, hold);
        return { granted: true, fencingToken: BigInt(backend.tried.length), hold };
      },
      subscribe(key, onChange) {
        subscriptions.push(key);
        listeners.add(onChange);
        return () => void listeners.delete(onChange);
      },
    },
    { notify: true },
  );
  const fire = (event?: KeyEvent): void => {
    for (const listener of [...listeners]) listener(event);
  };
  const free = (key: string): void => {
    backend.holders.delete(key);
    fire();
  };
  return { backend, subscriptions, fire, free };
}

let locks: Locks | undefined;
afterEach(async () => {
  await locks?.close();
  locks = undefined;
});

/** `n` acquires of "k" that wait (the key is held), once each made its first attempt and the loop its own. */
async function waiters(backend: Recorded, n: number, signals: AbortSignal[] = []) {
  const client = createLocks(backend);
  locks = client;
  backend.holders.set("k", { key: "k", owner: "someone" });
  const waits: Array<Promise<Lease>> = [];
  for (let i = 0; i < n; i++) waits.push(client.acquire("k", { signal: signals[i] }));
  for (const wait of waits) wait.catch(() => undefined);
  // n first attempts, and one by the shared loop after it subscribed.
  await until(() => backend.tried.length === n + 1);
  return waits;
}

describe("waiters of one key in one client", () => {
  it("share one subscription, and while nothing happens make no attempt", async () => {
    const { backend, subscriptions } = notifying();
    await waiters(backend, 100);
    expect(subscriptions).toHaveLength(1);
    expect(subscriptions[0]?.key).toBe("k");
    // A window in which 100 waiters polling on their own would have tried (the fastest poll is 2 ms).
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(backend.tried).toHaveLength(101);
  });

  it("are handed the key in the order they came, one attempt per release", async () => {
    const { backend, free } = notifying();
    const waits = await waiters(backend, 50);
    for (let i = 0; i < 3; i++) {
      const before = backend.tried.length;
      free("k");
      const lease = await waits[i]!;
      expect(backend.tried.length - before, "attempts for this hand-off").toBe(1);
      expect(lease.fencingToken, "granted to the attempt just made").toBe(
        BigInt(backend.tried.length),
      );
      await lease.release();
    }
  });

  it("let one in the middle give up without an attempt, and skip it", async () => {
    const { backend, free } = notifying();
    const controllers = Array.from({ length: 10 }, () => new AbortController());
    const waits = await waiters(
      backend,
      10,
      controllers.map((c) => c.signal),
    );
    const before = backend.tried.length;
    controllers[5]!.abort(new Error("gave up"));
    await expect(waits[5]).rejects.toThrow("gave up");
    expect(backend.tried.length).toBe(before);
    for (const i of [0, 1, 2, 3, 4, 6]) {
      free("k");
      await (await waits[i]!).release();
    }
    expect(backend.tried.length - before, "one attempt per hand-off").toBe(6);
  });

  it("let the next one try at once when the first gives up (it may fit where the first did not)", async () => {
    const { backend } = notifying();
    const controllers = Array.from({ length: 3 }, () => new AbortController());
    const waits = await waiters(
      backend,
      3,
      controllers.map((c) => c.signal),
    );
    const before = backend.tried.length;
    controllers[0]!.abort(new Error("gave up"));
    await expect(waits[0]).rejects.toThrow("gave up");
    await until(() => backend.tried.length === before + 1);
    // The first attempts came in order: the new attempt is the second waiter's.
    expect(backend.tried.at(-1)?.owner).toBe(backend.tried[1]?.owner);
  });

  it("poll while notifications may be missed, and stop once they are back", async () => {
    const { backend, fire } = notifying();
    await waiters(backend, 5);
    const before = backend.tried.length;
    fire("unsure");
    await until(() => backend.tried.length >= before + 4);
    fire("changed");
    const settled = backend.tried.length + 1;
    await until(() => backend.tried.length >= settled);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(backend.tried.length, "attempts after the channel came back").toBeLessThanOrEqual(
      settled,
    );
  });

  it("with healthy notifications, poll again at the holder's expiry (retryAfterMs)", async () => {
    const { backend } = notifying(20);
    await waiters(backend, 20);
    const before = backend.tried.length;
    // Not a hand-off: the holder's lease ran out without a notification.
    await until(() => backend.tried.length >= before + 2);
    expect(backend.tried.slice(before).every((r) => r.key === "k")).toBe(true);
  });
});
