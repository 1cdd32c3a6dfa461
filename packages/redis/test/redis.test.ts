import { createLocks, type Lease, type Locks, type LocksOptions } from "@locks/core";
import { createRequest, keyDigest } from "@locks/core/backend";
import { History } from "@locks/core/history";
import { freePort, type RedisServer, startProxy, startRedis, waitFor } from "@locks/testkit";
import { Cluster, Redis } from "ioredis";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { SAFE_CLIENT_OPTIONS, unsafeOptions } from "../src/clients.js";
import { Connection } from "../src/connection.js";
import { type RedisBackendOptions, redisBackend } from "../src/index.js";
import { keyLayout } from "../src/layout.js";
import {
  blockEventLoop,
  codeOf,
  freshNamespace,
  rawClient,
  startWorker,
  trackHandles,
} from "./helpers.js";

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

/** The rejection of `promise` (or "resolved"), for checking code, message and cause. */
async function errorOf(
  promise: Promise<unknown>,
): Promise<{ code?: string; message: string; cause?: unknown }> {
  try {
    await promise;
  } catch (error) {
    return error as { code?: string; message: string; cause?: unknown };
  }
  return { message: "resolved" };
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
      [{ url, prefix: "locks" }, "prefix"],
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
        minTtlMs: 250,
      });
      // Not fair, acquire declines: the core waits by notification and polling.
      const signal = new AbortController().signal;
      expect(await single.acquire?.(createRequest({ key: "k" }), { signal })).toBeUndefined();
      expect(fair.capabilities.fair).toBe(true);
      expect(fair.capabilities.minTtlMs).toBe(250);
      expect(typeof fair.acquire).toBe("function");
      expect({ ...redlock.capabilities }).toMatchObject({
        semaphore: false,
        fair: false,
        shared: true,
        minTtlMs: 500,
      });
      for (const backend of [single, fair, redlock]) {
        expect(Object.isFrozen(backend.capabilities)).toBe(true);
      }
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
    // A client with the options the backend requires: the backend uses it as it is.
    const given = new Redis(server.url, {
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
    });
    given.on("error", () => undefined);
    onTestFinished(() => {
      given.disconnect();
    });
    await waitFor(() => given.status === "ready");
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
    expect(await given.exists(keyLayout(keyDigest(ns, "k")).exclusive)).toBe(0);
    const lease = await locks.tryAcquire("k");
    expect(lease).not.toBeNull();
    await lease?.release();
  });
});

describe("client options (RELIABILITY.md: no offline queue, no resend after a reconnect)", () => {
  it("every client that carries lock commands has them: made from url, given, or a duplicate of a given client that lacks them", () => {
    const stale = 1_000;
    const unsafeRedis = new Redis(url, { lazyConnect: true, keyPrefix: "app:" });
    const safeRedis = new Redis(url, { ...SAFE_CLIENT_OPTIONS });
    const nodes = [{ host: "127.0.0.1", port: 1 }];
    const unsafeCluster = new Cluster(nodes, { lazyConnect: true });
    const safeCluster = new Cluster(nodes, {
      lazyConnect: true,
      enableOfflineQueue: false,
      redisOptions: { autoResendUnfulfilledCommands: false },
    });
    expect(unsafeOptions(unsafeRedis)).toEqual([
      "enableOfflineQueue",
      "autoResendUnfulfilledCommands",
    ]);
    expect(unsafeOptions(unsafeCluster)).toEqual([
      "enableOfflineQueue",
      "redisOptions.autoResendUnfulfilledCommands",
    ]);
    const connections = {
      url: Connection.create(url, undefined, stale),
      // User options cannot turn them back on.
      urlOverridden: Connection.create(
        url,
        { enableOfflineQueue: true, autoResendUnfulfilledCommands: true },
        stale,
      ),
      unsafeRedis: Connection.given(unsafeRedis, stale),
      safeRedis: Connection.given(safeRedis, stale),
      unsafeCluster: Connection.given(unsafeCluster, stale),
      safeCluster: Connection.given(safeCluster, stale),
    };
    for (const [name, connection] of Object.entries(connections)) {
      expect(unsafeOptions(connection.client), name).toEqual([]);
    }
    // A given client that has them is used as it is, and is not the backend's to close.
    expect(connections.safeRedis.client).toBe(safeRedis);
    expect(connections.safeRedis.owned).toBe(false);
    expect(connections.safeCluster.client).toBe(safeCluster);
    // One that lacks them is never modified: lock commands go through a duplicate the backend closes.
    expect(unsafeOptions(unsafeRedis)).toHaveLength(2);
    expect(connections.unsafeRedis.client).not.toBe(unsafeRedis);
    expect(connections.unsafeRedis.owned).toBe(true);
    expect(connections.unsafeRedis.keyPrefix).toBe("app:");
    expect(connections.unsafeCluster.client).not.toBe(unsafeCluster);
    expect(connections.unsafeCluster.owned).toBe(true);
    // The invariant is asserted where a connection is made, whoever makes it.
    expect(() => new Connection(unsafeRedis, false, stale)).toThrow(
      /autoResendUnfulfilledCommands/,
    );
    for (const client of [unsafeRedis, safeRedis, unsafeCluster, safeCluster]) client.disconnect();
    for (const connection of Object.values(connections)) connection.client.disconnect();
  });

  it("a given client with ioredis' defaults is wrapped: a lock command in flight when the connection drops is never replayed", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const raw = rawClient(url);
    // ioredis' defaults: offline queue on, unfulfilled commands resent after a reconnect.
    const given = new Redis(proxy.url as string);
    given.on("error", () => undefined);
    onTestFinished(() => {
      given.disconnect();
    });
    const locks = locksOver({ client: given }, ns);
    await (await locks.acquire("warm-up")).release();
    const layout = keyLayout(keyDigest(ns, "k"));
    proxy.delay(300);
    const attempt = errorOf(locks.tryAcquire("k", { ttlMs: 30_000 }));
    // The server ran the acquire; its reply is still on the wire when the connection drops.
    await waitFor(async () => (await raw.exists(layout.exclusive)) === 1, { intervalMs: 5 });
    proxy.resetAll();
    proxy.delay(0);
    const error = await attempt;
    expect(error.code).toBe("BACKEND_UNAVAILABLE");
    // Cleaned up by owner once the connection is back, and never run a second time.
    await waitFor(async () => (await raw.exists(layout.exclusive)) === 0, {
      timeoutMs: 5_000,
      message: "the unknown acquire to be cleaned up",
    });
    expect(await raw.get(layout.fence), "times the acquire ran").toBe("1");
  });
});

describe("script cache", () => {
  it("after SCRIPT FLUSH, calls still run in order: a release sent after an acquire never overtakes it", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const raw = rawClient(server.url);
    const backend = redisBackend({ url: server.url });
    onTestFinished(() => backend.close());
    const request = createRequest({ key: "k", namespace: ns });
    await backend.release(request, undefined);
    for (let i = 0; i < 3; i++) {
      await raw.script("FLUSH");
      // Both go out before either reply: both meet an empty script cache.
      const attempt = backend.tryAcquire(request);
      const release = backend.release(request, undefined);
      expect((await attempt).granted).toBe(true);
      await release;
      expect(await raw.exists(keyLayout(keyDigest(ns, "k")).exclusive)).toBe(0);
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
      const layout = keyLayout(keyDigest(ns, key));
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
    expect(keyLayout(keyDigest("a", "b:c")).exclusive).not.toBe(
      keyLayout(keyDigest("a:b", "c")).exclusive,
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
    expect(await prefixed.exists(`app:${keyLayout(keyDigest(ns, "k")).exclusive}`)).toBe(1);
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
  for (const fair of [false, true]) {
    it(`reports every holder with its mode, token, time left and owner, and the key's limit${fair ? " (fair)" : ""}`, async () => {
      const ns = freshNamespace();
      const locks = locksOver({ url, fair }, ns);
      const backend = locks.backend;
      const key = createRequest({ key: "k", namespace: ns });
      expect(await backend.inspect?.(key)).toEqual({ holders: [] });
      const lease = await locks.acquire("k", { ttlMs: 10_000 });
      const exclusive = await backend.inspect?.(key);
      expect(exclusive).toEqual({
        limit: 1,
        holders: [
          expect.objectContaining({
            holder: undefined,
            mode: "exclusive",
            fencingToken: lease.fencingToken,
          }),
        ],
      });
      expect(exclusive?.holders[0]?.expiresInMs).toBeGreaterThan(9_000);
      await lease.release();
      const readers = await Promise.all([0, 1].map(() => locks.acquire("k", { mode: "shared" })));
      const shared = await backend.inspect?.(key);
      expect(shared?.limit).toBe(1);
      // Each reader has its own token (the counter moved on between them).
      expect(new Set(shared?.holders.map((h) => `${h.mode} ${h.fencingToken}`))).toEqual(
        new Set(readers.map((r) => `shared ${r.fencingToken}`)),
      );
      await Promise.all(readers.map((r) => r.release()));
      const slots = await Promise.all([0, 1, 2].map(() => locks.acquire("k", { limit: 3 })));
      const semaphore = await backend.inspect?.(key);
      expect(semaphore?.limit).toBe(3);
      expect(semaphore?.holders.map((h) => h.mode)).toEqual([
        "exclusive",
        "exclusive",
        "exclusive",
      ]);
      expect(new Set(semaphore?.holders.map((h) => h.owner)).size).toBe(3);
      expect(new Set(semaphore?.holders.map((h) => h.fencingToken))).toEqual(
        new Set(slots.map((s) => s.fencingToken)),
      );
      for (const holder of semaphore?.holders ?? []) expect(holder.expiresInMs).toBeGreaterThan(0);
      await slots[0]?.release();
      expect((await backend.inspect?.(key))?.holders).toHaveLength(2);
      await Promise.all(slots.slice(1).map((slot) => slot.release()));
      expect(await backend.inspect?.(key)).toEqual({ holders: [] });
    });
  }
});

/** A label no store may mangle or take for a name: quotes, a newline, braces, a path, emoji. */
const AWKWARD = `she said "don't" \n{tag}:*\r\n../../etc 🔒 ünï\t${"x".repeat(40)}`;

describe("holder labels and forceRelease", () => {
  it("stores the label with the lock as data: another process's inspect reads it back byte for byte, and no key name contains it", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const worker = await startWorker({ url }, ns);
    const held = await worker.acquire("k", { holder: AWKWARD, ttlMs: 10_000 });
    const locks = locksOver({ url }, ns);
    const state = await locks.inspect("k");
    expect(state.holders).toEqual([
      {
        holder: AWKWARD,
        mode: "exclusive",
        fencingToken: held.token,
        expiresAt: expect.any(Number),
      },
    ]);
    // The label lives in the details hash of the lock's own keys, never in a name.
    const layout = keyLayout(keyDigest(ns, "k"));
    expect(await raw.hvals(layout.details)).toEqual([`${held.token} ${AWKWARD}`]);
    expect(await raw.keys("*🔒*")).toEqual([]);
    expect(await raw.keys("*etc*")).toEqual([]);
    await worker.release();
    expect((await locks.inspect("k")).holders).toEqual([]);
    expect(await raw.exists(layout.details)).toBe(0);
  });

  it("an unlabelled exclusive grant, extension and release write no details (the uncontended cost stays flat)", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const locks = locksOver({ url }, ns);
    const layout = keyLayout(keyDigest(ns, "k"));
    const lease = await locks.acquire("k");
    await lease.extend();
    expect(await raw.exists(layout.details)).toBe(0);
    expect((await locks.inspect("k")).holders).toEqual([
      {
        holder: undefined,
        mode: "exclusive",
        fencingToken: lease.fencingToken,
        expiresAt: expect.any(Number),
      },
    ]);
    await lease.release();
    // A labelled one does, and its extension keeps the details as long as the lock.
    const labelled = await locks.acquire("k", { holder: "w", ttlMs: 2_000 });
    await labelled.extend(60_000);
    expect(await raw.pttl(layout.details)).toBeGreaterThan(50_000);
    await labelled.release();
    expect(await raw.exists(layout.details)).toBe(0);
  });

  it("an uncontended cycle runs 6 commands and publishes nothing; a holder someone waited for publishes its release", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const admin = rawClient(server.url);
    const locks = locksOver({ url: server.url }, ns);
    await (await locks.acquire("warm-up")).release();
    await admin.config("RESETSTAT");
    for (let i = 0; i < 10; i++) await (await locks.acquire("k")).release();
    const stats = await admin.info("commandstats");
    const calls = [...stats.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)].map(([, name, n]) => [
      name,
      Number(n),
    ]);
    // The admin's own RESETSTAT and INFO are not counted yet.
    expect(Object.fromEntries(calls)).toEqual({
      evalsha: 20,
      set: 10,
      incr: 10,
      get: 10,
      del: 10,
    });
    // Refused once, the holder is marked: its release publishes.
    const held = await locks.acquire("k");
    expect(await locks.tryAcquire("k")).toBeNull();
    await held.release();
    expect(await commandCalls(admin, "publish")).toBe(1);
  });

  for (const fair of [false, true]) {
    it(`inspect lists each reader and semaphore slot with its own label, token and time left${fair ? " (fair)" : ""}`, async () => {
      const ns = freshNamespace();
      const [a, b] = [locksOver({ url, fair }, ns), locksOver({ url, fair }, ns)];
      const r1 = await a.acquire("k", { mode: "shared", holder: "reader one", ttlMs: 10_000 });
      const r2 = await b.acquire("k", { mode: "shared", ttlMs: 20_000 });
      const before = Date.now();
      const readers = await b.inspect("k");
      expect(readers.limit, "only a semaphore has one").toBeUndefined();
      expect(readers.holders.map((h) => [h.holder, h.mode, h.fencingToken])).toEqual([
        ["reader one", "shared", r1.fencingToken],
        [undefined, "shared", r2.fencingToken],
      ]);
      const [e1, e2] = readers.holders.map((h) => (h.expiresAt ?? 0) - before);
      expect(e1).toBeGreaterThan(8_000);
      expect(e1).toBeLessThanOrEqual(11_000);
      expect(e2).toBeGreaterThan(18_000);
      await Promise.all([r1.release(), r2.release()]);
      const slots = [
        await a.acquire("k", { limit: 3, holder: "slot 🔒" }),
        await b.acquire("k", { limit: 3, holder: "slot\n2" }),
      ];
      const semaphore = await a.inspect("k");
      expect(semaphore.limit).toBe(3);
      expect(semaphore.holders.map((h) => [h.holder, h.mode, h.fencingToken])).toEqual([
        ["slot 🔒", "exclusive", slots[0]!.fencingToken],
        ["slot\n2", "exclusive", slots[1]!.fencingToken],
      ]);
      await slots[0]!.release();
      expect((await a.inspect("k")).holders.map((h) => h.holder)).toEqual(["slot\n2"]);
      await slots[1]!.release();
      expect(await a.inspect("k")).toEqual({ key: "k", holders: [], limit: undefined });
    });
  }

  it("forceRelease evicts a holder in another process: true, the next token is higher, the evicted lease is lost at its next extension and its release frees nothing of the next holder", async () => {
    const ns = freshNamespace();
    const worker = await startWorker({ url }, ns);
    const evicted = await worker.acquire("k", { holder: "old", ttlMs: 1_500 });
    const [admin, next] = [locksOver({ url }, ns), locksOver({ url }, ns)];
    expect(await admin.forceRelease("k")).toBe(true);
    const lease = await next.acquire("k", { holder: "new", timeoutMs: 5_000 });
    expect(lease.fencingToken).toBeGreaterThan(evicted.token);
    // The worker's watchdog extends at a third of the TTL: that extension is refused.
    const lost = await worker.next("lost", 10_000);
    expect(lost).toMatchObject({ lease: evicted.id, code: "LOCK_LOST" });
    await worker.release().catch(() => undefined);
    expect((await admin.inspect("k")).holders.map((h) => [h.holder, h.fencingToken])).toEqual([
      ["new", lease.fencingToken],
    ]);
    await lease.release();
  });

  for (const fair of [false, true]) {
    it(`forceRelease publishes the release notification: a waiter is woken and granted${fair ? " (fair: the head of the queue)" : ""}`, async () => {
      const ns = freshNamespace();
      const holder = locksOver({ url, fair }, ns);
      const evicted = await holder.acquire("k", { ttlMs: 60_000 });
      // A waiter driven through the backend: nothing polls, only a notification wakes it.
      const waiter = redisBackend({ url, fair });
      onTestFinished(() => waiter.close());
      const request = createRequest({ key: "k", namespace: ns, holder: "waiter" });
      // Fair: it joins the server's queue (at its head) and declines, as for the core.
      expect(
        await waiter.acquire?.(request, { signal: new AbortController().signal }),
      ).toBeUndefined();
      let woken = 0;
      const unsubscribe = await waiter.subscribe!(request, () => {
        woken++;
      });
      onTestFinished(() => unsubscribe());
      expect((await waiter.tryAcquire(request)).granted).toBe(false);
      expect(await holder.forceRelease("k")).toBe(true);
      await waitFor(() => woken > 0, { timeoutMs: 5_000, message: "the waiter to be woken" });
      const granted = await waiter.tryAcquire(request);
      expect(granted.granted && granted.fencingToken).toBeGreaterThan(evicted.fencingToken);
      expect((await holder.inspect("k")).holders.map((h) => h.holder)).toEqual(["waiter"]);
      if (granted.granted) await waiter.release(request, granted.hold);
    });
  }

  it("forceRelease frees every reader and semaphore slot at once; their extensions are refused; the counter is kept", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const [a, b] = [locksOver({ url }, ns), locksOver({ url }, ns)];
    const layout = keyLayout(keyDigest(ns, "k"));
    for (const options of [{ mode: "shared" as const }, { limit: 2 }]) {
      const held = [
        await a.acquire("k", { ...options, holder: "a" }),
        await a.acquire("k", options),
      ];
      const counter = await raw.get(layout.fence);
      expect(await b.forceRelease("k")).toBe(true);
      expect(await raw.get(layout.fence)).toBe(counter);
      for (const name of [layout.exclusive, layout.readers, layout.slots, layout.details]) {
        expect(await raw.exists(name), name).toBe(0);
      }
      // The other client's leases learn at their next extension.
      for (const lease of held) expect(await codeOf(lease.extend())).toBe("LOCK_LOST");
      const writer = await b.acquire("k", { timeoutMs: 5_000 });
      for (const lease of held) expect(writer.fencingToken).toBeGreaterThan(lease.fencingToken);
      await writer.release();
    }
  });

  it("forceRelease of a free key, a released one or one whose holder expired resolves false", async () => {
    const ns = freshNamespace();
    const locks = locksOver({ url }, ns);
    expect(await locks.forceRelease("never")).toBe(false);
    await (await locks.acquire("released", { holder: "h" })).release();
    expect(await locks.forceRelease("released")).toBe(false);
    // Taken through a backend alone: nobody releases it, the server expires it.
    const backend = redisBackend({ url });
    onTestFinished(() => backend.close());
    const request = createRequest({ key: "expired", namespace: ns, ttlMs: 250, holder: "h" });
    expect((await backend.tryAcquire(request)).granted).toBe(true);
    await waitFor(async () => (await locks.inspect("expired")).holders.length === 0);
    expect(await locks.forceRelease("expired")).toBe(false);
  });
});

describe("semaphore limits", () => {
  for (const fair of [false, true]) {
    it(`refuses a limit other than the one the holders use, at once, with INVALID_ARGUMENT naming limit${fair ? " (fair)" : ""}`, async () => {
      const ns = freshNamespace();
      const [a, b] = [locksOver({ url, fair }, ns), locksOver({ url, fair }, ns)];
      const slot = await a.acquire("pool", { limit: 2 });
      const others = [{ limit: 3 }, { limit: 1 }, { mode: "shared" as const }];
      for (const options of others) {
        const label = JSON.stringify(options);
        const refused = await errorOf(b.tryAcquire("pool", options));
        expect(refused.code, label).toBe("INVALID_ARGUMENT");
        expect(refused.message, label).toBe(
          `limit ${options.limit ?? 1} differs from the limit 2 that the key's current holders use`,
        );
        // Waiting cannot help: acquire gets the same error instead of waiting out its timeout.
        const started = performance.now();
        expect(await codeOf(b.acquire("pool", { ...options, timeoutMs: 5_000 })), label).toBe(
          "INVALID_ARGUMENT",
        );
        expect(performance.now() - started, label).toBeLessThan(2_000);
      }
      // The holders' own limit still joins them.
      const second = await b.acquire("pool", { limit: 2, timeoutMs: 5_000 });
      await Promise.all([slot.release(), second.release()]);
      // Once they left, any limit may take the key; then that one is the key's limit.
      const exclusive = await a.acquire("pool");
      expect((await errorOf(b.tryAcquire("pool", { limit: 2 }))).message).toContain(
        "limit 2 differs from the limit 1",
      );
      const reader = b.acquire("pool", { mode: "shared", timeoutMs: 5_000 });
      await exclusive.release();
      await (await reader).release();
      const free = await b.tryAcquire("pool", { limit: 4 });
      expect(free).not.toBeNull();
      await free?.release();
    });

    it(`a waiter gets the same error when the key is taken with another limit while it waits${fair ? " (fair)" : ""}`, async () => {
      const proxy = await startProxy(url);
      onTestFinished(() => proxy.close());
      const ns = freshNamespace();
      const raw = rawClient(url);
      const direct = locksOver({ url, fair }, ns);
      const slow = locksOver({ url: proxy.url as string, fair }, ns);
      await (await slow.acquire("warm-up")).release();
      const holders = await Promise.all([0, 1].map(() => direct.acquire("pool", { limit: 2 })));
      // The waiter's link is slow: whatever wakes it reaches the server 200 ms later.
      proxy.delay(100);
      const waiting = errorOf(slow.acquire("pool", { limit: 2, timeoutMs: 10_000 }));
      const layout = keyLayout(keyDigest(ns, "pool"));
      await waitFor(async () =>
        fair
          ? (await raw.zcard(layout.queue)) === 1
          : ((await raw.pubsub("NUMSUB", layout.channel)) as [string, number])[1] === 1,
      );
      await Promise.all(holders.map((lease) => lease.release()));
      const other = await direct.tryAcquire("pool", { limit: 3 });
      expect(other, "the key taken with limit 3").not.toBeNull();
      const error = await waiting;
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toContain("limit 2 differs from the limit 3");
      proxy.delay(0);
      // It left nothing behind (fair: its queue entry).
      await waitFor(async () => (await raw.exists(layout.queue)) === 0);
      await other?.release();
    });
  }
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
      // Every waiter tried once (fair: and joined the queue), and the key's one wait subscribed and
      // tried for its head: they all sleep now.
      const attempts = fair ? 201 : 101;
      await waitFor(async () => (await commandCalls(admin, "evalsha")) - before >= attempts, {
        message: "every waiter's first attempts",
      });
      const channel = keyLayout(keyDigest(ns, "k")).channel;
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
    const worker = await startWorker({ url }, ns);
    const stale = (await worker.acquire("k", { ttlMs: 500 })).token;
    worker.kill("SIGSTOP");
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
    worker.kill("SIGCONT");
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
    const key = keyLayout(keyDigest(ns, "k")).exclusive;
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
    await waitFor(async () => (await raw.exists(keyLayout(keyDigest(ns, "k")).exclusive)) === 0);
  });
});

describe("fair mode", () => {
  it("a waiter joins the queue at once, before its subscription is confirmed", async () => {
    const server = await ownServer();
    const ns = freshNamespace();
    const admin = rawClient(server.url);
    const locks = locksOver({ url: server.url, fair: true }, ns);
    const holder = await locks.acquire("k");
    // No room for the subscriber connection the wait opens: SUBSCRIBE cannot be confirmed.
    await admin.config("SET", "maxclients", "2");
    onTestFinished(() => admin.config("SET", "maxclients", "10000").then(() => undefined));
    const started = performance.now();
    const waiting = locks.acquire("k", { timeoutMs: 10_000 });
    const layout = keyLayout(keyDigest(ns, "k"));
    await waitFor(async () => (await admin.zcard(layout.queue)) === 1, { intervalMs: 5 });
    // Well before the subscription gives up (1 s): arrival order is the order waiters started.
    expect(performance.now() - started).toBeLessThan(500);
    await admin.config("SET", "maxclients", "10000");
    await holder.release();
    await (await waiting).release();
  });

  it("a waiter that gives up leaves no queue entry behind", async () => {
    const ns = freshNamespace();
    const raw = rawClient(url);
    const [a, b] = [locksOver({ url, fair: true }, ns), locksOver({ url, fair: true }, ns)];
    const held = await a.acquire("k");
    const layout = keyLayout(keyDigest(ns, "k"));
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
    await waitFor(async () => (await raw.zcard(keyLayout(keyDigest(ns, "k")).queue)) === 1);
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
    const layout = keyLayout(keyDigest(ns, "k"));
    const worker = await startWorker({ url, fair: true, waiterTtlMs: 600 }, ns);
    // Never answered: the worker is killed while it waits.
    void worker.acquire("k", { timeoutMs: 30_000 });
    await waitFor(async () => (await raw.zcard(layout.queue)) === 1);
    worker.kill("SIGKILL");
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
    const workers = await Promise.all([0, 1, 2, 3].map(() => startWorker({ url }, ns)));
    const runs = workers.map((w) => w.contend("k", { loops: 150, tasks: 2 }));
    const history = new History();
    for (const holds of await Promise.all(runs)) history.add(...holds);
    expect(history.holds).toHaveLength(1_200);
    history.assertValid();
    for (const w of workers) expect(await w.close()).toBe(0);
  });
});

describe("ttlMs floor and reply timeouts", () => {
  const floor = 250;

  it("grants a free key at the floor every time: first grants of fresh backends and warm ones", async () => {
    const ns = freshNamespace();
    const outcomes: string[] = [];
    const grant = async (locks: Locks, key: string): Promise<void> => {
      const outcome = await locks.tryAcquire(key, { ttlMs: floor, autoExtend: false }).then(
        async (lease) => {
          await lease?.release();
          return lease === null ? "refused" : "granted";
        },
        (error: { code?: string }) => String(error.code),
      );
      outcomes.push(outcome);
    };
    // The first grant of a backend pays for the connection and SCRIPT LOAD too.
    for (let i = 0; i < 10; i++) {
      const fresh = createLocks(redisBackend({ url }), { namespace: ns });
      await grant(fresh, `fresh-${i}`);
      await fresh.close();
    }
    const warm = locksOver({ url }, ns);
    for (let i = 0; i < 100; i++) await grant(warm, `warm-${i}`);
    expect(outcomes.filter((o) => o !== "granted")).toEqual([]);
    expect(await codeOf(warm.tryAcquire("k", { ttlMs: floor - 1 }))).toBe("INVALID_ARGUMENT");
  });

  it("a reply later than the TTL over a slow link is a grant refused as too late, never BACKEND_UNAVAILABLE", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const raw = rawClient(url);
    const locks = locksOver({ url: proxy.url as string }, ns);
    await (await locks.acquire("warm-up")).release();
    // 150 ms each way: every reply comes back after a 250 ms lease has run out.
    proxy.delay(150);
    expect(await locks.tryAcquire("k", { ttlMs: floor, autoExtend: false })).toBeNull();
    expect(await codeOf(locks.acquire("k", { ttlMs: floor, timeoutMs: 1_000 }))).toBe(
      "LOCK_TIMEOUT",
    );
    proxy.delay(0);
    // Each late grant was released by owner.
    await waitFor(async () => (await raw.exists(keyLayout(keyDigest(ns, "k")).exclusive)) === 0);
  });

  it("a reply that arrived while the event loop was blocked is not taken for a silent server", async () => {
    const ns = freshNamespace();
    // A reply timeout far shorter than the block below.
    const locks = locksOver({ url, commandTimeoutMs: 20 }, ns);
    await (await locks.acquire("warm-up")).release();
    const attempt = locks.tryAcquire("k", { ttlMs: 10_000 });
    // The reply arrives meanwhile; when the loop runs again, the timeout check comes first.
    blockEventLoop(200);
    const lease = await attempt;
    expect(lease).not.toBeNull();
    await lease?.release();
  });
});

describe("close() while the server is stopped (SIGSTOP)", () => {
  for (const fair of [false, true]) {
    it(`ends an acquire in flight with LOCK_CLOSED at once, resolves well under a second, leaves no socket or timer${fair ? " (fair)" : ""}`, async () => {
      const server = await ownServer();
      onTestFinished(() => server.resume());
      const ns = freshNamespace();
      const admin = rawClient(server.url);
      await admin.ping();
      const open = trackHandles();
      const locks = createLocks(redisBackend({ url: server.url, fair }), { namespace: ns });
      onTestFinished(() => locks.close());
      // A lease for close() to release, and a waiter (its subscriber connection, its queue entry).
      const held = await locks.acquire("held");
      const waiting = codeOf(locks.acquire("held"));
      const channel = keyLayout(keyDigest(ns, "held")).channel;
      await waitFor(
        async () => ((await admin.pubsub("NUMSUB", channel)) as [string, number])[1] === 1,
      );
      server.pause();
      // No timeout, no signal: only close() can end it.
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
      expect(rejectedAfter, "ms from close() to the in-flight acquire's rejection").toBeLessThan(
        50,
      );
      expect(closedAfter, "ms close() took").toBeLessThan(800);
      expect(held.signal.aborted).toBe(true);
      expect(await open(), "timers and sockets left open").toEqual([]);
      server.resume();
    });
  }
});

describe("unreachable servers", () => {
  it("BACKEND_UNAVAILABLE names the server and the plain cause; the raw error is the cause (closed loopback port)", async () => {
    const port = await freePort();
    const closed = `redis://127.0.0.1:${port}`;
    const ns = freshNamespace();
    // Made by the backend, and a given client with ioredis' defaults (wrapped in one of ours).
    const given = new Redis(closed, { lazyConnect: true });
    given.on("error", () => undefined);
    onTestFinished(() => {
      given.disconnect();
    });
    for (const options of [{ url: closed }, { client: given }]) {
      const locks = locksOver(options, ns);
      // The first attempt connects; the next ones meet a client that is reconnecting.
      for (const call of [
        () => locks.tryAcquire("k"),
        () => locks.acquire("k"),
        () => locks.tryAcquire("k"),
      ]) {
        const error = await errorOf(call());
        expect(error.code).toBe("BACKEND_UNAVAILABLE");
        expect(error.message).toBe(
          `redis backend unavailable: 127.0.0.1:${port}: connection refused`,
        );
        expect((error.cause as { code?: string }).code).toBe("ECONNREFUSED");
      }
    }
  });
});

describe("fair mode over a slow link", () => {
  it("a grant from the queue, 100 ms each way, autoExtend false: the lease's signal aborts before another client can take the key", async () => {
    const proxy = await startProxy(url);
    onTestFinished(() => proxy.close());
    const ns = freshNamespace();
    const raw = rawClient(url);
    const direct = locksOver({ url, fair: true }, ns);
    const slow = locksOver({ url: proxy.url as string, fair: true }, ns);
    await (await slow.acquire("warm-up")).release();
    const holder = await direct.acquire("k");
    proxy.delay(100);
    const ttlMs = 800;
    const waiting = slow.acquire("k", { ttlMs, autoExtend: false, timeoutMs: 10_000 });
    await waitFor(async () => (await raw.zcard(keyLayout(keyDigest(ns, "k")).queue)) === 1);
    await holder.release();
    const lease = await waiting;
    const loss = watchLoss(lease);
    expect(lease.signal.aborted).toBe(false);
    // Another client takes the key as soon as the server lets it (the holder never extends).
    const next = await direct.acquire("k", { timeoutMs: 10_000 });
    const takenAt = performance.now();
    expect(loss.code).toBe("LOCK_LOST");
    expect(
      takenAt - (loss.at as number),
      "ms from the loss signal to the takeover",
    ).toBeGreaterThan(0);
    await next.release();
  });
});
