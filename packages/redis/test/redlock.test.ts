import { fileURLToPath } from "node:url";
import { createLocks, type Locks } from "@locks/core";
import { keyDigest } from "@locks/core/backend";
import { runConformanceSuite } from "@locks/core/conformance";
import { freePort, monitorRedis, startRedisGroup, waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import { codeOf, freshNamespace, rawClient, trackHandles } from "./helpers.js";

const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));
const members = await startRedisGroup(5);
afterAll(() => Promise.all(members.map((m) => m.stop())));
const urls = members.map((m) => m.url);

runConformanceSuite({
  name: "redlock",
  create: () => redisBackend({ urls }),
  process: { module, env: { REDIS_URLS: urls.join(",") } },
  ttlMs: 1000,
});

/** Five fresh members for a fault test, stopped when it ends. */
async function group(count: number, options: Parameters<typeof startRedisGroup>[1] = {}) {
  const servers = await startRedisGroup(count, options);
  onTestFinished(async () => {
    for (const s of servers) s.resume();
    await Promise.all(servers.map((s) => s.stop()));
  });
  return servers;
}

function locksOver(urls: readonly string[], namespace: string): Locks {
  const locks = createLocks(redisBackend({ urls }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

describe("redlock faults", () => {
  it("4 members: with 2 reachable nothing is ever granted (quorum 3 = floor(4/2) + 1), with 3 it grants", async () => {
    const servers = await group(4);
    const ns = freshNamespace();
    const locks = locksOver(
      servers.map((s) => s.url),
      ns,
    );
    await (await locks.acquire("k")).release();
    // One member stops answering, one is gone: 2 of 4 still grant.
    servers[0]!.pause();
    await servers[1]!.kill();
    for (let i = 0; i < 3; i++) {
      expect(await codeOf(locks.tryAcquire("k", { ttlMs: 5_000 }))).toBe("BACKEND_UNAVAILABLE");
    }
    expect(await codeOf(locks.acquire("k", { ttlMs: 5_000, timeoutMs: 3_000 }))).toBe(
      "BACKEND_UNAVAILABLE",
    );
    // The two that granted were released before the failure was reported.
    const layout = keyLayout(keyDigest(ns, "k"));
    for (const s of servers.slice(2)) {
      expect(await rawClient(s.url).exists(layout.exclusive)).toBe(0);
    }
    servers[0]!.resume();
    const lease = await waitFor(() => locks.tryAcquire("k").catch(() => null), {
      timeoutMs: 10_000,
    });
    await lease.release();
  });

  it("close() with every member stopped (SIGSTOP): an acquire in flight gets LOCK_CLOSED at once, close() is prompt and leaves no socket or timer", async () => {
    const servers = await group(3);
    const ns = freshNamespace();
    const admins = servers.map((s) => rawClient(s.url));
    await Promise.all(admins.map((admin) => admin.ping()));
    const open = trackHandles();
    const locks = createLocks(redisBackend({ urls: servers.map((s) => s.url) }), {
      namespace: ns,
    });
    onTestFinished(() => locks.close());
    const held = await locks.acquire("held");
    const waiting = codeOf(locks.acquire("held"));
    const channel = keyLayout(keyDigest(ns, "held")).channel;
    await waitFor(async () => {
      const counts = await Promise.all(
        admins.map(
          async (admin) => ((await admin.pubsub("NUMSUB", channel)) as [string, number])[1],
        ),
      );
      return counts.every((n) => n === 1);
    });
    for (const s of servers) s.pause();
    const inFlight = codeOf(locks.acquire("k"));
    const started = performance.now();
    let closedAfter = Number.POSITIVE_INFINITY;
    const closing = locks.close().then(() => {
      closedAfter = performance.now() - started;
    });
    expect(await inFlight).toBe("LOCK_CLOSED");
    const rejectedAfter = performance.now() - started;
    expect(await waiting).toBe("LOCK_CLOSED");
    await closing;
    expect(rejectedAfter, "ms from close() to the in-flight acquire's rejection").toBeLessThan(400); // not a member timeout (500 ms)
    expect(closedAfter, "ms close() took").toBeLessThan(2_000);
    expect(held.signal.aborted).toBe(true);
    expect(await open(), "timers and sockets left open").toEqual([]);
    for (const s of servers) s.resume();
  });

  it("grants with 2 of 5 members down; with 3 down fails fast with BACKEND_UNAVAILABLE and grants nothing", async () => {
    const servers = await group(5);
    const ns = freshNamespace();
    const locks = locksOver(
      servers.map((s) => s.url),
      ns,
    );
    const first = await locks.acquire("k");
    await first.release();
    await servers[0]!.kill();
    await servers[1]!.kill();
    const second = await locks.acquire("k", { timeoutMs: 5_000 });
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    await second.release();
    await servers[2]!.kill();
    const started = performance.now();
    expect(await codeOf(locks.tryAcquire("k"))).toBe("BACKEND_UNAVAILABLE");
    expect(await codeOf(locks.acquire("k", { timeoutMs: 5_000 }))).toBe("BACKEND_UNAVAILABLE");
    // Fast: far from the 5 s wait a retrying acquire would take (generous for a loaded machine).
    expect(performance.now() - started).toBeLessThan(2_500);
    // The two live members were released before the failure was reported.
    const layout = keyLayout(keyDigest(ns, "k"));
    for (const s of servers.slice(3))
      expect(await rawClient(s.url).exists(layout.exclusive)).toBe(0);
  });

  it("a failed attempt's clean-up is not sent again after the request's next attempt: the grant keeps its majority", async () => {
    const servers = await group(5);
    const urls = servers.map((s) => s.url);
    const ns = freshNamespace();
    // A 50 ms instance timeout, so that a clean-up retried in the background would be in its
    // back-off (50, 100, 200, 400, 800 ms after each timeout) when the members come back.
    const locks = createLocks(redisBackend({ urls, instanceTimeoutMs: 50 }), { namespace: ns });
    onTestFinished(() => locks.close());
    const layout = keyLayout(keyDigest(ns, "k"));
    const [a, b, c, d, e] = servers.map((s) => rawClient(s.url));
    await (await locks.acquire("warm-up")).release(); // every member's connection is ready
    // Another holder's keys on a majority: the first attempt is refused there.
    for (const member of [a, b, c])
      await member!.set(layout.exclusive, "f".repeat(32), "PX", 60_000);
    servers[3]!.pause();
    servers[4]!.pause();
    const monitor = await monitorRedis(servers[2]!);
    onTestFinished(() => monitor.close());
    // One request: its first attempt is refused by a, b, c, and its acquire and clean-up wait in
    // d's and e's sockets; its next attempts have the same owner.
    const acquiring = locks.acquire("k", { ttlMs: 5_000, timeoutMs: 15_000 });
    await waitFor(() => monitor.requests > 0, { timeoutMs: 5_000 });
    const attempted = monitor.requests;
    // Lets a background retry of the clean-up, if there were one, reach its 800 ms back-off.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    await c!.del(layout.exclusive);
    servers[3]!.resume();
    servers[4]!.resume();
    // A release's notification: the request attempts again, and is granted on c, d and e
    // (a and b still hold the other holder's key), a bare majority.
    await c!.publish(layout.channel, "released");
    const lease = await acquiring;
    expect(monitor.requests, "c saw the next attempt").toBeGreaterThan(attempted);
    // A clean-up sent again now would delete the grant on d and e. Watch past the retry's time.
    const deadline = performance.now() + 2_500;
    while (performance.now() < deadline) {
      expect([await d!.exists(layout.exclusive), await e!.exists(layout.exclusive)]).toEqual([
        1, 1,
      ]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(lease.signal.aborted).toBe(false);
    await lease.extend();
    await lease.release();
  });

  it("a paused member does not hold up a grant: it costs one instance timeout at most", async () => {
    const servers = await group(5);
    const locks = locksOver(
      servers.map((s) => s.url),
      freshNamespace(),
    );
    await (await locks.acquire("warm-up")).release();
    servers[0]!.pause();
    servers[1]!.pause();
    const started = performance.now();
    const lease = await locks.acquire("k", { ttlMs: 1_000, timeoutMs: 5_000 });
    // Instance timeout: TTL / 10 = 100 ms; waiting for the paused members would take the 5 s timeout.
    expect(performance.now() - started).toBeLessThan(900);
    expect(lease.signal.aborted).toBe(false);
    await lease.release();
  });

  it("fencing: counters that diverged still give a higher token, written back to a majority", async () => {
    const servers = await group(5);
    const ns = freshNamespace();
    const locks = locksOver(
      servers.map((s) => s.url),
      ns,
    );
    await (await locks.acquire("k")).release();
    // As if earlier grants had reached 100 through members 0-2 while 3 and 4 were away.
    const fence = keyLayout(keyDigest(ns, "k")).fence;
    for (const s of servers.slice(0, 3)) await rawClient(s.url).set(fence, "100");
    const lease = await locks.acquire("k");
    // Whichever majority granted, it shares a member with 0-2.
    expect(lease.fencingToken).toBeGreaterThan(100n);
    await lease.release();
    const counters = await Promise.all(
      servers.map(async (s) => Number(await rawClient(s.url).get(fence))),
    );
    expect(counters.filter((c) => c >= Number(lease.fencingToken)).length).toBeGreaterThanOrEqual(
      3,
    );
    // Lose the two members with the highest counters: the token still goes up.
    const highest = counters
      .map((c, i) => [c, i] as const)
      .sort((a, b) => b[0] - a[0])
      .slice(0, 2);
    for (const [, i] of highest) await servers[i]!.kill();
    const after = await locks.acquire("k", { timeoutMs: 5_000 });
    expect(after.fencingToken).toBeGreaterThan(lease.fencingToken);
    await after.release();
  });

  it("members restarted one at a time: tokens never go backwards (with and without persistence)", async () => {
    for (const persistent of [true, false]) {
      const servers = await group(3, persistent ? { appendonly: true, appendfsync: "always" } : {});
      const ns = freshNamespace();
      const locks = locksOver(
        servers.map((s) => s.url),
        ns,
      );
      const fence = keyLayout(keyDigest(ns, "k")).fence;
      const tokens: bigint[] = [];
      const grant = async (): Promise<bigint> => {
        // Right after a restart a member may still be reconnecting: retry until a majority answers.
        const lease = await waitFor(() => locks.tryAcquire("k").catch(() => null), {
          timeoutMs: 10_000,
        });
        tokens.push(lease.fencingToken);
        await lease.release();
        return lease.fencingToken;
      };
      for (const server of servers) {
        await grant();
        await server.kill();
        await server.restart();
        // Without persistence the member comes back empty. It may rejoin once grants have
        // brought its counter up again (the write-back does, as soon as it takes part).
        const member = rawClient(server.url);
        await waitFor(async () => {
          const token = await grant();
          const seen = await member.get(fence);
          return BigInt(seen ?? "0") >= token;
        });
      }
      await grant();
      for (let i = 1; i < tokens.length; i++) {
        expect(tokens[i], `grant ${i} of ${tokens.join(", ")}`).toBeGreaterThan(
          tokens[i - 1] as bigint,
        );
      }
    }
  });
});

describe("redlock forceRelease", () => {
  it("frees the key on every member: the next token is higher, the evicted lease is lost at its next extension, a waiter is woken", async () => {
    const servers = await group(5);
    const members = servers.map((s) => s.url);
    const ns = freshNamespace();
    const [a, b, c] = [locksOver(members, ns), locksOver(members, ns), locksOver(members, ns)];
    const evicted = await a.acquire("k", { holder: "old", ttlMs: 1_500 });
    const waiting = c.acquire("k", { holder: "waiter", timeoutMs: 10_000 });
    expect(await b.forceRelease("k")).toBe(true);
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(evicted.fencingToken);
    await waitFor(() => evicted.signal.aborted, { timeoutMs: 10_000 });
    expect((evicted.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    expect((await b.inspect("k")).holders.map((h) => h.holder)).toEqual(["waiter"]);
    await next.release();
    expect(await b.forceRelease("k")).toBe(false);
  });

  it("needs a majority of members: with 2 of 5 unreachable it frees the key; with 3, BACKEND_UNAVAILABLE (the members reached are freed)", async () => {
    const servers = await group(5);
    const members = servers.map((s) => s.url);
    const ns = freshNamespace();
    const holder = locksOver(members, ns);
    const admin = createLocks(redisBackend({ urls: members, commandTimeoutMs: 300 }), {
      namespace: ns,
    });
    onTestFinished(() => admin.close());
    const layout = keyLayout(keyDigest(ns, "k"));
    const first = await holder.acquire("k", { ttlMs: 30_000 });
    // Connected to every member first: a connection made to a silent member waits longer.
    await admin.inspect("k");
    servers[0]!.pause();
    servers[1]!.pause();
    expect(await admin.forceRelease("k")).toBe(true);
    for (const s of servers.slice(2)) {
      expect(await rawClient(s.url).exists(layout.exclusive)).toBe(0);
    }
    // Three of five refuse its extension: it no longer has a majority.
    expect(await codeOf(first.extend())).toBe("LOCK_LOST");
    servers[0]!.resume();
    servers[1]!.resume();
    const second = await holder.acquire("k", { ttlMs: 30_000, timeoutMs: 5_000 });
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    await admin.inspect("k");
    for (const s of servers.slice(0, 3)) s.pause();
    // A command sent to a silent member may still run when it is back: the outcome is unknown.
    expect(await codeOf(admin.forceRelease("k"))).toBe("BACKEND_UNAVAILABLE");
    for (const s of servers.slice(3)) {
      expect(await rawClient(s.url).exists(layout.exclusive)).toBe(0);
    }
    for (const s of servers.slice(0, 3)) s.resume();
    await second.release();
  });
});

describe("redlock specifics", () => {
  it("inspect: the holders a majority agrees on, with their mode and the key's limit", async () => {
    const ns = freshNamespace();
    const locks = locksOver(urls, ns);
    const free = { key: "k", holders: [], limit: undefined };
    expect(await locks.inspect("k")).toEqual(free);
    const lease = await locks.acquire("k");
    expect(await locks.inspect("k")).toEqual({
      key: "k",
      holders: [expect.objectContaining({ mode: "exclusive", fencingToken: lease.fencingToken })],
    });
    await lease.release();
    const readers = await Promise.all([0, 1].map(() => locks.acquire("k", { mode: "shared" })));
    const shared = await locks.inspect("k");
    expect(shared.limit, "only a semaphore has one").toBeUndefined();
    expect(shared.holders.map((h) => [h.mode, h.fencingToken])).toEqual(
      readers.map((r) => ["shared", r.fencingToken]).sort((a, b) => (a[1]! < b[1]! ? -1 : 1)),
    );
    await Promise.all(readers.map((r) => r.release()));
    expect(await locks.inspect("k")).toEqual(free);
  });

  it("inspect lists a holder only when a majority of members list it, with its label and the token most of them report", async () => {
    const ns = freshNamespace();
    const [a, b] = [locksOver(urls, ns), locksOver(urls, ns)];
    // A holder on one member only (a single-server client of the same namespace): not a Redlock holder.
    const single = createLocks(redisBackend({ url: urls[0]! }), { namespace: ns });
    onTestFinished(() => single.close());
    const minority = await single.acquire("k", { holder: "minority" });
    expect((await b.inspect("k")).holders).toEqual([]);
    await minority.release();
    const label = `a "quoted"\nlabel 🔒`;
    const lease = await a.acquire("k", { holder: label });
    expect(await b.inspect("k")).toEqual({
      key: "k",
      holders: [
        {
          holder: label,
          mode: "exclusive",
          fencingToken: lease.fencingToken,
          expiresAt: expect.any(Number),
        },
      ],
    });
    await lease.release();
    // Counters that diverged: a reader's token is written back into its details on the members
    // that lag (also those that grant after the decision), so they agree on the grant's token.
    const layout = keyLayout(keyDigest(ns, "r"));
    await rawClient(urls[0]!).set(layout.fence, "100");
    await rawClient(urls[1]!).set(layout.fence, "50");
    const reader = await a.acquire("r", { mode: "shared", holder: "reader" });
    await waitFor(async () => {
      const counters = await Promise.all(urls.map((u) => rawClient(u).get(layout.fence)));
      return counters.every((c) => BigInt(c ?? 0) >= reader.fencingToken);
    });
    expect((await b.inspect("r")).holders.map((h) => [h.holder, h.mode, h.fencingToken])).toEqual([
      ["reader", "shared", reader.fencingToken],
    ]);
    await reader.release();
  });

  it("a key its members' holders took with another limit is refused with limitMismatch", async () => {
    // Redlock itself only takes limit 1 (no semaphore); single-server clients of the same members
    // and prefix can hold a semaphore on the very keys Redlock uses.
    const ns = freshNamespace();
    const singles = urls.slice(0, 3).map((url) => {
      const locks = createLocks(redisBackend({ url }), { namespace: ns });
      onTestFinished(() => locks.close());
      return locks;
    });
    const slots = await Promise.all(singles.map((locks) => locks.acquire("pool", { limit: 2 })));
    const redlock = locksOver(urls, ns);
    for (const options of [{}, { mode: "shared" as const }]) {
      const error = (await redlock.tryAcquire("pool", options).catch((e: unknown) => e)) as {
        code?: string;
        message?: string;
      };
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toBe(
        "limit 1 differs from the limit 2 that the key's current holders use",
      );
    }
    await Promise.all(slots.map((slot) => slot.release()));
    const lease = await redlock.tryAcquire("pool");
    expect(lease).not.toBeNull();
    await lease?.release();
  });

  it("grants a free key at its floor (500 ms) every time: first grants of fresh backends and warm ones", async () => {
    const ns = freshNamespace();
    const outcomes: string[] = [];
    const grant = async (locks: Locks, key: string): Promise<void> => {
      const outcome = await locks.tryAcquire(key, { ttlMs: 500, autoExtend: false }).then(
        async (lease) => {
          await lease?.release();
          return lease === null ? "refused" : "granted";
        },
        (error: { code?: string }) => String(error.code),
      );
      outcomes.push(outcome);
    };
    for (let i = 0; i < 5; i++) {
      const fresh = createLocks(redisBackend({ urls }), { namespace: ns });
      await grant(fresh, `fresh-${i}`);
      await fresh.close();
    }
    const warm = locksOver(urls, ns);
    for (let i = 0; i < 50; i++) await grant(warm, `warm-${i}`);
    expect(outcomes.filter((o) => o !== "granted")).toEqual([]);
    expect(await codeOf(warm.tryAcquire("k", { ttlMs: 499 }))).toBe("INVALID_ARGUMENT");
  });

  it("a fresh client whose event loop is busy while it connects is granted: connecting does not count against the member timeout", async () => {
    const ns = freshNamespace();
    const outcomes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const fresh = createLocks(redisBackend({ urls }), { namespace: ns });
      const attempt = fresh.tryAcquire(`busy-${i}`);
      // Longer than the 500 ms member timeout, before any connection could be made.
      const until = performance.now() + 700;
      while (performance.now() < until) {}
      outcomes.push(
        await attempt.then(
          async (lease) => {
            await lease?.release();
            return lease === null ? "refused" : "granted";
          },
          (error: { code?: string }) => String(error.code),
        ),
      );
      await fresh.close();
    }
    expect(outcomes).toEqual(["granted", "granted", "granted"]);
  });

  it("BACKEND_UNAVAILABLE names every member that failed and its plain cause; the raw errors are the cause", async () => {
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const locks = locksOver(
      ports.map((p) => `redis://127.0.0.1:${p}`),
      freshNamespace(),
    );
    for (let i = 0; i < 2; i++) {
      const error = (await locks.tryAcquire("k").catch((e: unknown) => e)) as {
        code?: string;
        message: string;
        cause?: AggregateError;
      };
      expect(error.code).toBe("BACKEND_UNAVAILABLE");
      expect(error.message).toMatch(
        /^redis backend unavailable: fewer than 2 of 3 Redlock members reachable: /,
      );
      // Decided as soon as a majority failed: those members are named, each with its cause.
      const named = ports.filter((port) =>
        error.message.includes(`127.0.0.1:${port}: connection refused`),
      );
      expect(named.length).toBeGreaterThanOrEqual(2);
      expect(error.message).not.toMatch(/enableOfflineQueue|Stream isn't/);
      expect(new Set(error.cause?.errors.map((e: { code?: string }) => e.code))).toEqual(
        new Set(["ECONNREFUSED"]),
      );
      expect(error.cause?.errors).toHaveLength(named.length);
    }
  });
});
