import {
  createLocks,
  History,
  type Lease,
  type Locks,
  type LocksOptions,
  newOwnerToken,
} from "@locks/core";
import { type RedisServer, startProxy, startRedis, waitFor } from "@locks/testkit";
import { Redis } from "ioredis";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { type RedisBackendOptions, redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import { codeOf, freshNamespace, rawClient, Worker } from "./helpers.js";

const url = inject("redisUrl");

/** A lock client over a new backend, closed when the test ends. */
function locksOver(
  options: RedisBackendOptions,
  namespace: string,
  defaults: LocksOptions = {},
): Locks {
  const locks = createLocks(redisBackend(options), { namespace, ...defaults });
  onTestFinished(() => locks.close());
  return locks;
}

/** A dedicated server (for fault injection or clean command counts), stopped when the test ends. */
async function ownServer(options: Parameters<typeof startRedis>[0] = {}): Promise<RedisServer> {
  const server = await startRedis(options);
  onTestFinished(() => server.stop());
  return server;
}

/** When `lease.signal` aborted (monotonic ms) and with which code. */
function watchLoss(lease: Lease): { at?: number; code?: string } {
  const seen: { at?: number; code?: string } = {};
  lease.signal.addEventListener("abort", () => {
    seen.at = performance.now();
    seen.code = (lease.signal.reason as { code?: string }).code;
  });
  return seen;
}

async function commandCalls(admin: Redis, command: string): Promise<number> {
  const info = await admin.info("commandstats");
  const match = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(info);
  return match ? Number(match[1]) : 0;
}

describe("options", () => {
  it("refuses bad factory options synchronously, naming the option", () => {
    const client = new Redis(url, { lazyConnect: true });
    const bad: Array<[unknown, string]> = [
      [undefined, "options"],
      [{}, "options"],
      [{ url: 42 }, "url"],
      [{ url: "http://localhost" }, "url"],
      [{ url, clients: [client] }, "options"],
      [{ client: {} }, "client"],
      [{ clients: [] }, "clients"],
      [{ clients: [client, client] }, "clients"],
      [{ urls: "redis://x" }, "urls"],
      [{ url, prefix: "a{b" }, "prefix"],
      [{ url, prefix: "" }, "prefix"],
      [{ url, commandTimeoutMs: 0 }, "commandTimeoutMs"],
      [{ url, waiterTtlMs: 1000 }, "waiterTtlMs"],
      [{ url, fair: "yes" }, "fair"],
      [{ urls: [url], fair: true }, "fair"],
      [{ url, instanceTimeoutMs: 50 }, "instanceTimeoutMs"],
      [{ client, redisOptions: {} }, "redisOptions"],
      [{ url, bogus: 1 }, "bogus"],
    ];
    for (const [options, name] of bad) {
      expect(() => redisBackend(options as RedisBackendOptions), JSON.stringify(options)).toThrow(
        expect.objectContaining({
          code: "INVALID_ARGUMENT",
          message: expect.stringContaining(name),
        }),
      );
    }
    expect(client.status).toBe("wait");
    client.disconnect();
  });

  it("declares honest capabilities per configuration", async () => {
    const single = redisBackend({ url });
    const fair = redisBackend({ url, fair: true });
    const redlock = redisBackend({ urls: [url, url.replace("redis:", "redis:"), url] });
    try {
      expect({ ...single.capabilities }).toEqual({
        scope: "cluster",
        ttl: true,
        fencing: true,
        shared: true,
        semaphore: true,
        fair: false,
        notify: true,
      });
      expect(single.acquire).toBeUndefined();
      expect(fair.capabilities.fair).toBe(true);
      expect(typeof fair.acquire).toBe("function");
      expect({ ...redlock.capabilities }).toMatchObject({
        semaphore: false,
        fair: false,
        shared: true,
      });
    } finally {
      await Promise.all([single.close(), fair.close(), redlock.close()]);
    }
  });
});

describe("clients", () => {
  it("never closes a client it was given; closes the ones it made, subscriber included", async () => {
    const ns = freshNamespace();
    const given = rawClient(url);
    const a = createLocks(redisBackend({ client: given }), { namespace: ns });
    const name = `locks-test-${ns}`;
    const b = createLocks(redisBackend({ url, redisOptions: { connectionName: name } }), {
      namespace: ns,
    });
    // A wait makes both open their subscriber connection.
    const held = await a.acquire("k");
    const waiting = b.acquire("k", { timeoutMs: 5_000 });
    const admin = rawClient(url);
    await waitFor(async () => ((await admin.client("LIST")) as string).split(name).length - 1 >= 2);
    await held.release();
    await (await waiting).release();
    const subscriberOfGiven = a.acquire("k2");
    await (await subscriberOfGiven).release();
    await a.close();
    await b.close();
    expect(given.status).toBe("ready");
    expect(await given.ping()).toBe("PONG");
    await waitFor(async () => !((await admin.client("LIST")) as string).includes(name), {
      message: "the backend's own connections to close",
    });
  });

  it("sends no lock command while a given client is reconnecting: fails fast, queues nothing", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    // The user's client keeps ioredis defaults (offline queue on): the backend must not use it.
    const given = rawClient(server.url);
    await given.ping();
    const locks = locksOver({ client: given }, ns);
    await server.kill();
    await waitFor(() => given.status === "reconnecting");
    const started = performance.now();
    expect(await codeOf(locks.tryAcquire("k"))).toBe("BACKEND_UNAVAILABLE");
    expect(await codeOf(locks.acquire("k", { timeoutMs: 5_000 }))).toBe("BACKEND_UNAVAILABLE");
    expect(performance.now() - started).toBeLessThan(500);
    await server.restart();
    await waitFor(() => given.status === "ready");
    // Nothing was queued and replayed: the key is free, and a waiter-less attempt gets it.
    expect(await given.exists(keyLayout("locks", ns, "k").exclusive)).toBe(0);
    const lease = await locks.tryAcquire("k");
    expect(lease).not.toBeNull();
    await lease?.release();
  });
});

describe("script cache", () => {
  it("after SCRIPT FLUSH, calls still run in order: a release sent after an acquire never overtakes it", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const raw = rawClient(server.url);
    const backend = redisBackend({ url: server.url });
    onTestFinished(() => backend.close());
    const request = {
      key: "k",
      namespace: ns,
      owner: newOwnerToken(),
      mode: "exclusive" as const,
      limit: 1,
      ttlMs: 30_000,
    };
    await backend.release(request);
    for (let i = 0; i < 3; i++) {
      await raw.script("FLUSH");
      // Both go out before either reply: both meet an empty script cache.
      const attempt = backend.tryAcquire(request);
      const release = backend.release(request);
      expect((await attempt).granted).toBe(true);
      await release;
      expect(await raw.exists(keyLayout("locks", ns, "k").exclusive)).toBe(0);
    }
  });
});

describe("keys on the server", () => {
  it("keeps every key of a lock under one hash tag that no key string can break", async () => {
    const ns = freshNamespace();
    const locks = locksOver({ url }, ns);
    const raw = rawClient(url);
    const keys = ["{a}", "}{", "x{y}z", "{}", "a:b", "é".repeat(512)];
    const tags = new Set<string>();
    for (const key of keys) {
      const lease = await locks.acquire(key);
      const layout = keyLayout("locks", ns, key);
      for (const name of Object.values(layout)) {
        expect(name).toMatch(/^locks:\{[0-9a-f]{32}\}:[a-z]+$/);
        tags.add(name.slice(0, name.indexOf("}") + 1));
      }
      expect(await raw.get(layout.exclusive)).toHaveLength(32);
      expect(Number(await raw.get(layout.fence))).toBe(Number(lease.fencingToken));
      await lease.release();
      expect(await raw.exists(layout.exclusive)).toBe(0);
    }
    expect(tags.size).toBe(keys.length);
    // The namespace is part of the tag: ("a", "b:c") and ("a:b", "c") differ.
    expect(keyLayout("locks", "a", "b:c").exclusive).not.toBe(
      keyLayout("locks", "a:b", "c").exclusive,
    );
  });

  it("works through a client with a keyPrefix, notifications included", async () => {
    const ns = freshNamespace();
    const prefixed = rawClient(url);
    const client = new Redis(url, { keyPrefix: "app:" });
    onTestFinished(() => {
      client.disconnect();
    });
    const [a, b] = [locksOver({ client }, ns), locksOver({ client }, ns)];
    const held = await a.acquire("k", { ttlMs: 60_000 });
    expect(await prefixed.exists(`app:${keyLayout("locks", ns, "k").exclusive}`)).toBe(1);
    const waiting = b.acquire("k", { timeoutMs: 10_000 });
    // Past the first retries: only a notification can wake the waiter quickly now.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const released = performance.now();
    await held.release();
    const next = await waiting;
    expect(performance.now() - released).toBeLessThan(250);
    await next.release();
  });
});

describe("inspect", () => {
  it("reports the holders of a key: owner, mode, token and time left", async () => {
    const ns = freshNamespace();
    const locks = locksOver({ url }, ns);
    const backend = locks.backend;
    expect(await backend.inspect?.(ns, "k")).toEqual({ held: false, holders: [] });
    const lease = await locks.acquire("k", { ttlMs: 10_000 });
    const exclusive = await backend.inspect?.(ns, "k");
    expect(exclusive?.held).toBe(true);
    expect(exclusive?.holders).toEqual([
      expect.objectContaining({ mode: "exclusive", fencingToken: lease.fencingToken }),
    ]);
    expect(exclusive?.holders[0]?.expiresInMs).toBeGreaterThan(9_000);
    await lease.release();
    const readers = await Promise.all([0, 1].map(() => locks.acquire("k", { mode: "shared" })));
    const shared = await backend.inspect?.(ns, "k");
    expect(shared?.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    await Promise.all(readers.map((r) => r.release()));
    expect((await backend.inspect?.(ns, "k"))?.held).toBe(false);
  });
});

describe("notifications", () => {
  for (const fair of [false, true]) {
    it(`100 waiters in one process share one subscription and cost a few commands per handoff${fair ? " (fair)" : ""}`, async () => {
      const server = await ownServer();
      const ns = freshNamespace();
      const admin = rawClient(server.url);
      const locks = locksOver({ url: server.url, fair }, ns, { ttlMs: 30_000 });
      const holder = await locks.acquire("k");
      const before = await commandCalls(admin, "evalsha");
      const done = Array.from({ length: 100 }, () =>
        locks.acquire("k", { timeoutMs: 20_000 }).then((lease) => lease.release()),
      );
      // Every waiter tried, subscribed and tried again (fair: joined the queue): they all sleep now.
      await waitFor(async () => (await commandCalls(admin, "evalsha")) - before >= 200, {
        message: "every waiter's first attempts",
      });
      const channel = keyLayout("locks", ns, "k").channel;
      expect(await admin.pubsub("NUMSUB", channel)).toEqual([channel, 1]);
      await admin.config("RESETSTAT");
      await holder.release();
      await Promise.all(done);
      const scripts = await commandCalls(admin, "evalsha");
      const subscribes = await commandCalls(admin, "subscribe");
      // Per handoff: the release and the woken waiter's attempt (plus stray fallback polls).
      expect(scripts / 101).toBeLessThan(3);
      expect(subscribes).toBe(0);
    });
  }
});

describe("faults", () => {
  it("server killed: the holder loses its lease at its deadline, calls fail fast, all works after a restart", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const locks = locksOver({ url: server.url }, ns);
    const lease = await locks.acquire("k", { ttlMs: 600 });
    const granted = performance.now();
    const loss = watchLoss(lease);
    await server.kill();
    const started = performance.now();
    expect(await codeOf(locks.acquire("other", { timeoutMs: 5_000 }))).toBe("BACKEND_UNAVAILABLE");
    expect(performance.now() - started).toBeLessThan(500);
    await waitFor(() => loss.at !== undefined, { timeoutMs: 3_000 });
    expect(loss.code).toBe("LOCK_LOST");
    // At the local deadline (TTL minus drift), not when the server comes back.
    expect((loss.at as number) - granted).toBeLessThan(600 + 150);
    await server.restart();
    const again = await waitFor(() => locks.tryAcquire("k").catch(() => null), {
      timeoutMs: 10_000,
    });
    await again.release();
  });

  it("restart without persistence: the holder learns at its next extension; tokens start over", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const locks = locksOver({ url: server.url }, ns);
    for (let i = 0; i < 3; i++) await (await locks.acquire("k")).release();
    const lease = await locks.acquire("k", { ttlMs: 1_500 });
    expect(lease.fencingToken).toBe(4n);
    const loss = watchLoss(lease);
    await server.kill();
    await server.restart();
    // The watchdog's next extension finds the key gone: lost, long before the TTL would say so.
    await waitFor(() => loss.at !== undefined, { timeoutMs: 3_000 });
    expect(loss.code).toBe("LOCK_LOST");
    const next = await locks.acquire("k", { timeoutMs: 5_000 });
    // The documented hazard: without persistence the counter is gone too.
    expect(next.fencingToken).toBe(1n);
    await next.release();
  });

  it("with appendfsync always, fencing tokens never go backwards across a crash", async () => {
    const server = await ownServer({ appendonly: true, appendfsync: "always" });
    const ns = freshNamespace();
    const locks = locksOver({ url: server.url }, ns);
    let last = 0n;
    for (let crash = 0; crash < 2; crash++) {
      for (let i = 0; i < 3; i++) {
        const lease = await waitFor(() => locks.tryAcquire("k").catch(() => null), {
          timeoutMs: 10_000,
        });
        expect(lease.fencingToken).toBeGreaterThan(last);
        last = lease.fencingToken;
        await lease.release();
      }
      await server.kill();
      await server.restart();
    }
    const after = await waitFor(() => locks.tryAcquire("k").catch(() => null), {
      timeoutMs: 10_000,
    });
    expect(after.fencingToken).toBeGreaterThan(last);
    await after.release();
  });

  it("holder paused past its TTL: the next holder's token is higher, the stale one's lease is lost on resume", async () => {
    const ns = freshNamespace();
    const worker = new Worker({ REDIS_URL: url, LOCKS_NAMESPACE: ns });
    await worker.next("ready");
    worker.send({ type: "hold", key: "k", ttlMs: 500 });
    const stale = BigInt((await worker.next("acquired")).token);
    worker.child.kill("SIGSTOP");
    const locks = locksOver({ url }, ns);
    const lease = await locks.acquire("k", { timeoutMs: 5_000 });
    expect(lease.fencingToken).toBeGreaterThan(stale);
    // A resource that keeps the highest token it has seen refuses the stale holder's write.
    let highest = lease.fencingToken;
    const write = (token: bigint): boolean => {
      if (token < highest) return false;
      highest = token;
      return true;
    };
    worker.child.kill("SIGCONT");
    expect((await worker.next("lost")).code).toBe("LOCK_LOST");
    expect(write(stale)).toBe(false);
    expect(write(lease.fencingToken)).toBe(true);
    await lease.release();
  });

  it("network blackhole longer than the TTL: the loss is declared at the local deadline", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const locks = locksOver({ url: proxy.url as string, commandTimeoutMs: 5_000 }, ns);
    const lease = await locks.acquire("k", { ttlMs: 600 });
    const granted = performance.now();
    const loss = watchLoss(lease);
    proxy.blackhole(true);
    await waitFor(() => loss.at !== undefined, { timeoutMs: 3_000 });
    expect(loss.code).toBe("LOCK_LOST");
    expect((loss.at as number) - granted).toBeLessThan(600 + 100);
    // Meanwhile the key expired on the server: a direct client gets it.
    const direct = locksOver({ url }, ns);
    const next = await direct.acquire("k", { timeoutMs: 5_000 });
    await next.release();
    // Drop the partitioned connections, so close() fails fast instead of waiting for replies.
    await proxy.close();
  });

  it("connection reset after the server ran the acquire: not reported granted, and the key frees", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const raw = rawClient(url);
    const locks = locksOver({ url: proxy.url as string }, ns);
    await (await locks.acquire("warm-up")).release();
    proxy.delay(300);
    const attempt = codeOf(locks.tryAcquire("k", { ttlMs: 30_000 }));
    const key = keyLayout("locks", ns, "k").exclusive;
    // The server took the lock; its reply is still on the wire.
    await waitFor(async () => (await raw.exists(key)) === 1, { intervalMs: 5 });
    proxy.resetAll();
    proxy.delay(0);
    expect(await attempt).toBe("BACKEND_UNAVAILABLE");
    // The owner-checked clean-up runs once the connection is back: long before the 30 s TTL.
    await waitFor(async () => (await raw.exists(key)) === 0, {
      timeoutMs: 5_000,
      message: "the unknown acquire to be cleaned up",
    });
  });

  it("a reply that cannot arrive within the TTL is not a grant, and is cleaned up", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const raw = rawClient(url);
    const locks = locksOver({ url: proxy.url as string }, ns);
    await (await locks.acquire("warm-up")).release();
    proxy.delay(200);
    // 200 ms each way, a 300 ms lease: no grant can come back in time.
    const outcome = await locks.tryAcquire("k", { ttlMs: 300 }).then(
      (lease) => (lease === null ? "null" : "granted"),
      (error: { code?: string }) => error.code,
    );
    expect(["null", "BACKEND_UNAVAILABLE"]).toContain(outcome);
    proxy.delay(0);
    await waitFor(async () => (await raw.exists(keyLayout("locks", ns, "k").exclusive)) === 0);
  });
});

describe("fair mode", () => {
  it("a waiter that gives up leaves no queue entry behind", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const [a, b] = [locksOver({ url, fair: true }, ns), locksOver({ url, fair: true }, ns)];
    const held = await a.acquire("k");
    const layout = keyLayout("locks", ns, "k");
    const waiting = codeOf(b.acquire("k", { timeoutMs: 300 }));
    await waitFor(async () => (await raw.zcard(layout.queue)) === 1);
    expect(await waiting).toBe("LOCK_TIMEOUT");
    expect(await raw.zcard(layout.queue)).toBe(0);
    expect(await raw.zcard(layout.queueExpiry)).toBe(0);
    await held.release();
  });

  it("a waiter that waited longer than its TTL gets a whole lease, dated from its grant", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const [a, b] = [locksOver({ url, fair: true }, ns), locksOver({ url, fair: true }, ns)];
    const held = await a.acquire("k");
    const waiting = b.acquire("k", { ttlMs: 300, timeoutMs: 10_000 });
    await waitFor(async () => (await raw.zcard(keyLayout("locks", ns, "k").queue)) === 1);
    // The wait itself has to outlast the waiter's 300 ms TTL.
    await new Promise((resolve) => setTimeout(resolve, 600));
    await held.release();
    const lease = await waiting;
    // Granted once (a grant refused as too old would have burnt a token and re-queued the waiter).
    expect(lease.fencingToken).toBe(held.fencingToken + 1n);
    expect(lease.signal.aborted).toBe(false);
    expect(lease.expiresAt).toBeGreaterThan(Date.now() + 100);
    await lease.release();
  });

  it("a crashed waiter's queue entry expires and the queue moves on", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const locks = locksOver({ url, fair: true, waiterTtlMs: 600 }, ns);
    const held = await locks.acquire("k");
    const layout = keyLayout("locks", ns, "k");
    const worker = new Worker({
      REDIS_URL: url,
      REDIS_FAIR: "1",
      REDIS_WAITER_TTL: "600",
      LOCKS_NAMESPACE: ns,
    });
    await worker.next("ready");
    worker.send({ type: "wait", key: "k", timeoutMs: 30_000 });
    await waitFor(async () => (await raw.zcard(layout.queue)) === 1);
    worker.child.kill("SIGKILL");
    await worker.exited;
    // Queued behind the dead waiter.
    const next = locks.acquire("k", { timeoutMs: 10_000 });
    await waitFor(async () => (await raw.zcard(layout.queue)) === 2);
    await held.release();
    const started = performance.now();
    await (await next).release();
    expect(performance.now() - started).toBeLessThan(600 + 1_000);
    expect(await raw.exists(layout.queue)).toBe(0);
  });
});

describe("across processes", () => {
  it("4 processes with 2 tasks each: no overlap, fencing tokens increase (1,200 holds)", async () => {
    const ns = freshNamespace();
    const workers = Array.from(
      { length: 4 },
      () => new Worker({ REDIS_URL: url, LOCKS_NAMESPACE: ns }),
    );
    await Promise.all(workers.map((w) => w.next("ready")));
    for (const w of workers) w.send({ type: "contend", key: "k", loops: 150, tasks: 2 });
    const history = new History();
    for (const w of workers) history.add(...(await w.next("holds", 60_000)).holds);
    expect(history.holds).toHaveLength(1_200);
    history.assertValid();
    for (const w of workers) w.send({ type: "close" });
    for (const w of workers) expect(await w.exited).toBe(0);
  });
});
