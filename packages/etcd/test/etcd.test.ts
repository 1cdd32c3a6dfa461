import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Backend, createLocks, isLockError, type Lease, type Locks } from "@locks/core";
import { createRequest, keyDigest } from "@locks/core/backend";
import { History } from "@locks/core/history";
import {
  freePort,
  nodeChildArgs,
  startEtcd,
  startEtcdCluster,
  startProxy,
  waitFor,
} from "@locks/testkit";
import { Etcd3 } from "etcd3";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { retryBackoff } from "../src/backoff.js";
import { etcdBackend } from "../src/index.js";
import { describeResources, trackResources } from "./resources.js";

const endpoints = inject("etcdEndpoints");

/** A fresh namespace per test: tests share the server and never wipe it. */
function scope() {
  return { namespace: `ns-${randomBytes(5).toString("hex")}` };
}

/** A lock client over a new backend instance, closed when the test ends. */
function client(
  hosts: readonly string[],
  options: { namespace: string },
): { locks: Locks; backend: Backend } {
  const backend = etcdBackend({ hosts });
  const locks = createLocks(backend, { namespace: options.namespace });
  onTestFinished(() => locks.close());
  return { locks, backend };
}

/** A plain etcd3 client to look at (and tamper with) what the backend wrote. */
function raw(hosts: readonly string[]): Etcd3 {
  const etcd = new Etcd3({ hosts: [...hosts] });
  onTestFinished(() => etcd.close());
  return etcd;
}

/** Where the contenders of `key` live: `locks/<digest of (namespace, key)>/`, after a client's own prefix. */
function lockBase(namespace: string, key: string, root = ""): string {
  return `${root}locks/${keyDigest(namespace, key).toString("base64url")}/`;
}

/** The contender keys of `keys` in `namespace`, oldest first per key. */
async function contenders(etcd: Etcd3, namespace: string, keys = ["k"], root = "") {
  const replies = await Promise.all(
    keys.map((key) => {
      const base = lockBase(namespace, key, root);
      return etcd.kv.range({
        key: Buffer.from(base),
        range_end: Buffer.from(`${base.slice(0, -1)}0`),
        sort_target: "Create",
        sort_order: "Ascend",
      });
    }),
  );
  return replies.flatMap((reply) => reply.kvs);
}

/** What the backend itself reports about `key` (the core's `locks.inspect` maps it). */
function statusOf(backend: Backend, namespace: string, key: string) {
  return backend.inspect!(createRequest({ key, namespace }));
}

function codeOf(reason: unknown): string | undefined {
  return isLockError(reason) ? reason.code : undefined;
}

describe("options", () => {
  it("refuses unknown options (`prefix` too: the namespace is the only scope), and etcd3 options beside a client, before any I/O", () => {
    const etcd = raw(endpoints);
    const refused = (options: unknown, message: string): void => {
      let error: unknown;
      try {
        etcdBackend(options as Parameters<typeof etcdBackend>[0]);
      } catch (e) {
        error = e;
      }
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(message);
    };
    refused({ hosts: endpoints, prefix: "app" }, "options.prefix is not a known option");
    refused({ hosts: endpoints, requestTimeout: 500 }, "options.requestTimeout is not a known");
    refused({ client: etcd, auth: { username: "u", password: "p" } }, "options.auth is only for");
    refused({ client: etcd, hosts: endpoints }, "options.hosts is only for");
    refused({ client: {} }, "options.client must be an etcd3");
    refused({ hosts: [] }, "options.hosts must be a non-empty");
    refused({ hosts: endpoints, requestTimeoutMs: 0 }, "options.requestTimeoutMs must be positive");
    refused({}, "must have either `client` or `hosts`");
    refused("127.0.0.1:2379", "options must be an object");
  });
});

describe("queue and sessions", () => {
  it("a failed tryAcquire writes nothing; a waiter that gives up deletes its key", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const held = await a.acquire("k");
    expect(await b.tryAcquire("k")).toBeNull();
    expect(await b.tryAcquire("k", { mode: "shared" })).toBeNull();
    expect(await contenders(etcd, s.namespace)).toHaveLength(1);
    await expect(b.acquire("k", { timeoutMs: 100 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    const controller = new AbortController();
    const waiting = b.acquire("k", { signal: controller.signal });
    await waitFor(async () => (await contenders(etcd, s.namespace)).length === 2);
    controller.abort(new Error("gave up"));
    await expect(waiting).rejects.toThrow("gave up");
    await waitFor(async () => (await contenders(etcd, s.namespace)).length === 1, {
      message: "the aborted waiter's key to be deleted",
    });
    await held.release();
    expect(await contenders(etcd, s.namespace)).toHaveLength(0);
  });

  it("the backend's queued acquire, aborted, rejects once its key is deleted (lead() waits for it to settle)", async () => {
    const proxy = await startProxy(endpoints[0]!);
    onTestFinished(() => proxy.close());
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    // Over a slow link, so that the delete is still on its way when the abort lands.
    const { backend } = client([`${proxy.host}:${proxy.port}`], s);
    const held = await a.acquire("k");
    const controller = new AbortController();
    const request = createRequest({ key: "k", namespace: s.namespace });
    const waiting = backend.acquire!(request, { signal: controller.signal });
    await waitFor(async () => (await contenders(etcd, s.namespace)).length === 2);
    proxy.delay(50);
    controller.abort(new Error("gave up"));
    await expect(waiting).rejects.toThrow("gave up");
    expect(await contenders(etcd, s.namespace)).toHaveLength(1);
    await held.release();
  });

  it("one lease per backend instance and TTL (in whole seconds), not one per acquire", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const { locks } = client(endpoints, s);
    const leases: Lease[] = [];
    for (const key of ["a", "b", "c"]) leases.push(await locks.acquire(key, { ttlMs: 4_500 }));
    leases.push(await locks.acquire("d", { ttlMs: 5_000 })); // rounds up to the same 5 s
    leases.push(await locks.acquire("e", { ttlMs: 9_000 }));
    const kvs = await contenders(etcd, s.namespace, ["a", "b", "c", "d", "e"]);
    expect(kvs).toHaveLength(5);
    expect(new Set(kvs.map((kv) => kv.lease)).size).toBe(2);
    const ttls = await Promise.all(
      [...new Set(kvs.map((kv) => kv.lease))].map(
        async (id) => (await etcd.leaseClient.leaseTimeToLive({ ID: id })).grantedTTL,
      ),
    );
    expect(ttls.map(Number).sort()).toEqual([5, 9]);
    await Promise.all(leases.map((l) => l.release()));
  });

  it("a grant from the queue is valid for its own TTL, not the longer session lease", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const c = client(endpoints, s).locks;
    const held = await a.acquire("k");
    // ttlMs 1000 rides on a 2 s session lease (the server's minimum).
    const waiting = b.acquire("k", { ttlMs: 1_000, autoExtend: false, timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(raw(endpoints), s.namespace)).length === 2);
    await held.release();
    const queued = await waiting;
    const granted = performance.now();
    expect(queued.expiresAt! - Date.now()).toBeLessThanOrEqual(1_000);
    const next = await c.acquire("k", { timeoutMs: 10_000 });
    expect(performance.now() - granted).toBeLessThan(1_800);
    expect(queued.signal.aborted).toBe(true);
    expect(next.fencingToken > queued.fencingToken).toBe(true);
    await next.release();
  });

  it("reuses key names, so a hot lock does not pile up names in etcd's index", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const { locks } = client(endpoints, s);
    const names = new Set<string>();
    let puts = 0;
    const watcher = await etcd.watch().prefix(lockBase(s.namespace, "hot")).only("put").create();
    onTestFinished(() => watcher.cancel());
    watcher.on("put", (kv) => {
      names.add(kv.key.toString());
      puts++;
    });
    for (let i = 0; i < 30; i++) await (await locks.acquire("hot")).release();
    const first = await locks.acquire("hot");
    const second = locks.acquire("hot", { timeoutMs: 5_000 });
    await waitFor(() => puts >= 32, { message: "32 puts" });
    await first.release();
    await (await second).release();
    // etcd keeps an index entry per key name until compaction: one per slot in use at once.
    expect(names.size).toBe(2);
  });

  it("a lease released before its minHoldMs keeps the key until then, then frees it (the session lease lives on)", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const granted = performance.now();
    await a.withLock("nightly", () => undefined, { minHoldMs: 1_000 });
    expect(await b.tryAcquire("nightly")).toBeNull();
    const next = await b.acquire("nightly", { timeoutMs: 10_000 });
    expect(performance.now() - granted).toBeGreaterThanOrEqual(990);
    await next.release();
  });

  it("keys of one lock cannot address another: 'a' never sees the holders of 'a/b'", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const child = await a.acquire("a/b");
    const parent = await b.tryAcquire("a");
    expect(parent).not.toBeNull();
    const status = await statusOf(b.backend, s.namespace, "a");
    expect(status?.holders).toHaveLength(1);
    expect(status?.holders[0]?.fencingToken).toBe(parent!.fencingToken);
    await Promise.all([child.release(), parent!.release()]);
  });

  it("inspect lists the holders with owner, mode, token and remaining TTL", async () => {
    const s = scope();
    const { locks, backend } = client(endpoints, s);
    const r1 = await locks.acquire("doc", { mode: "shared", ttlMs: 5_000 });
    const r2 = await locks.acquire("doc", { mode: "shared", ttlMs: 5_000 });
    const writer = locks.acquire("doc", { timeoutMs: 10_000 });
    await waitFor(
      async () => (await contenders(raw(endpoints), s.namespace, ["doc"])).length === 3,
    );
    const status = await statusOf(backend, s.namespace, "doc");
    expect(status.holders.length).toBeGreaterThan(0);
    expect(status.limit).toBe(1);
    expect(status.holders.map((h) => h.mode)).toEqual(["shared", "shared"]);
    expect(status.holders.map((h) => h.fencingToken)).toEqual([r1.fencingToken, r2.fencingToken]);
    for (const h of status.holders) {
      expect(h.owner).toMatch(/^[0-9a-f]{32}$/);
      expect(h.expiresInMs).toBeGreaterThan(0);
    }
    await Promise.all([r1.release(), r2.release()]);
    const w = await writer;
    expect(w.fencingToken > r2.fencingToken).toBe(true);
    await w.release();
    expect((await statusOf(backend, s.namespace, "doc")).holders).toEqual([]);
  });

  it("subscribe() reports releases of the key", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const { backend } = client(endpoints, s);
    const held = await a.acquire("k");
    let changes = 0;
    const stop = await backend.subscribe!(
      createRequest({ key: "k", namespace: s.namespace, ttlMs: 1_000 }),
      () => changes++,
    );
    await held.release();
    await waitFor(() => changes > 0, { message: "a change notification" });
    await stop();
  });

  it("works through an etcd3 Namespace and writes only under its prefix", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const ns = etcd.namespace(`${s.namespace}-app/`);
    const a = createLocks(etcdBackend({ client: ns }), { namespace: s.namespace });
    const b = createLocks(etcdBackend({ client: ns }), { namespace: s.namespace });
    onTestFinished(async () => {
      await a.close();
      await b.close();
    });
    const held = await a.acquire("k");
    const waiting = b.acquire("k", { timeoutMs: 10_000 });
    await waitFor(
      async () => (await contenders(etcd, s.namespace, ["k"], `${s.namespace}-app/`)).length === 2,
    );
    await held.release();
    const next = await waiting;
    expect(next.fencingToken > held.fencingToken).toBe(true);
    await next.release();
    // The backend did not close the client it was given.
    expect(await etcd.get(`${s.namespace}-missing`).string()).toBeNull();
  });

  it("close() revokes its session: what it held frees at once, but a key released before its minHoldMs stays until then", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s);
    const b = client(endpoints, s).locks;
    await a.locks.acquire("x", { ttlMs: 60_000 });
    await a.locks.acquire("y", { ttlMs: 30_000 });
    const early = await a.locks.acquire("kept", { ttlMs: 30_000, minHoldMs: 3_000 });
    const granted = performance.now();
    await early.release();
    const [session] = await contenders(etcd, s.namespace, ["kept"]);
    await a.locks.close();
    for (const key of ["x", "y"]) {
      const lease = await b.tryAcquire(key);
      expect(lease, key).not.toBeNull();
      await lease!.release();
    }
    // The session lease is revoked; the kept key lives on a lease nobody keeps alive.
    expect((await etcd.leaseClient.leaseTimeToLive({ ID: session!.lease })).TTL).toBe("-1");
    const [kept] = await contenders(etcd, s.namespace, ["kept"]);
    expect(kept!.lease).not.toBe(session!.lease);
    expect(await b.tryAcquire("kept")).toBeNull();
    const next = await b.acquire("kept", { timeoutMs: 10_000 });
    expect(performance.now() - granted).toBeGreaterThanOrEqual(2_990);
    await next.release();
  });

  it("a lease revoked from outside aborts lease.signal; the next acquire uses a new session", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const { locks } = client(endpoints, s);
    const lease = await locks.acquire("k", { ttlMs: 3_000 });
    const [kv] = await contenders(etcd, s.namespace);
    const revoked = performance.now();
    await etcd.leaseClient.leaseRevoke({ ID: kv!.lease });
    await waitFor(() => lease.signal.aborted, { timeoutMs: 3_000 });
    // Learnt at the next keepalive or extension (a third of the TTL), not 2x TTL later.
    expect(performance.now() - revoked).toBeLessThan(3_000);
    expect(codeOf(lease.signal.reason)).toBe("LOCK_LOST");
    const again = await locks.acquire("k", { ttlMs: 3_000, timeoutMs: 5_000 });
    const [kv2] = await contenders(etcd, s.namespace);
    expect(kv2!.lease).not.toBe(kv!.lease);
    await again.release();
  });

  it("a key deleted by someone else is noticed (by the watch on a held key, or at the next extension)", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const { locks } = client(endpoints, s);
    const lease = await locks.acquire("k", { ttlMs: 1_500 });
    const [kv] = await contenders(etcd, s.namespace);
    await etcd.kv.deleteRange({ key: kv!.key });
    await waitFor(() => lease.signal.aborted, { timeoutMs: 2_000 });
    expect(codeOf(lease.signal.reason)).toBe("LOCK_LOST");
  });

  it("a waiter whose lease is revoked while it waits never gets a grant on its old key", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const held = await a.acquire("k", { ttlMs: 10_000 });
    const waiting = b.acquire("k", { ttlMs: 10_000, timeoutMs: 15_000 });
    await waitFor(async () => (await contenders(etcd, s.namespace)).length === 2);
    const [, waiter] = await contenders(etcd, s.namespace);
    const revoke = await etcd.leaseClient.leaseRevoke({ ID: waiter!.lease });
    // Release at once, before the waiter's session could notice the revoke on its own.
    await held.release();
    const next = await waiting;
    expect(next.fencingToken > BigInt(waiter!.create_revision)).toBe(true);
    expect(next.fencingToken > BigInt(revoke.header.revision)).toBe(true);
    await next.release();
  });
});

describe("holder labels, inspect and forceRelease", () => {
  /** Quotes, a space, a newline, a tab, non-BMP text: data, stored as given. */
  const LABEL = `"worker" 'seven'\nline two\t🔒 ünï`;

  it("stores the label in the contender's value: another client reads it back as given", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const lease = await a.acquire("k", { holder: LABEL });
    const [kv] = await contenders(etcd, s.namespace);
    // owner, limit, then the label to the end of the value.
    expect(kv!.value.toString()).toMatch(/^[0-9a-f]{32} 1 /);
    expect(kv!.value.toString().endsWith(` 1 ${LABEL}`)).toBe(true);
    const state = await b.inspect("k");
    expect(state.holders).toEqual([
      {
        holder: LABEL,
        mode: "exclusive",
        fencingToken: lease.fencingToken,
        expiresAt: expect.any(Number),
      },
    ]);
    await lease.release();
  });

  it("reads a value written without a label (an older client) as unlabelled", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const lease = await a.acquire("k", { holder: "new" });
    const [kv] = await contenders(etcd, s.namespace);
    await etcd.kv.put({
      key: kv!.key,
      value: Buffer.from(`${"a".repeat(32)} 1`),
      lease: kv!.lease,
    });
    expect((await b.inspect("k")).holders.map((h) => h.holder)).toEqual([undefined]);
    await lease.release();
  });

  it("inspect lists every reader or semaphore holder with its label, never a waiter", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const [a, b, c, d] = [1, 2, 3, 4].map(() => client(endpoints, s).locks);
    const r1 = await a!.acquire("doc", { mode: "shared", holder: "r 1" });
    const r2 = await b!.acquire("doc", { mode: "shared", holder: "r\n2" });
    const writer = c!.acquire("doc", { holder: "writer", timeoutMs: 10_000 });
    // The writer queues first: a reader that comes after it waits behind it.
    await waitFor(async () => (await contenders(etcd, s.namespace, ["doc"])).length === 3);
    const late = d!.acquire("doc", { mode: "shared", holder: "late reader", timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(etcd, s.namespace, ["doc"])).length === 4);
    const readers = await d!.inspect("doc");
    expect(readers.holders.map((h) => [h.holder, h.mode, h.fencingToken])).toEqual([
      ["r 1", "shared", r1.fencingToken],
      ["r\n2", "shared", r2.fencingToken],
    ]);
    expect(readers.limit, "only a semaphore has one").toBeUndefined();

    const s1 = await a!.acquire("pool", { limit: 2, holder: "s1" });
    const s2 = await b!.acquire("pool", { limit: 2, holder: "s2" });
    const s3 = c!.acquire("pool", { limit: 2, holder: "s3", timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(etcd, s.namespace, ["pool"])).length === 3);
    const pool = await d!.inspect("pool");
    expect(pool.limit).toBe(2);
    expect(pool.holders.map((h) => [h.holder, h.mode, h.fencingToken])).toEqual([
      ["s1", "exclusive", s1.fencingToken],
      ["s2", "exclusive", s2.fencingToken],
    ]);
    await Promise.all([r1.release(), r2.release(), s1.release()]);
    await Promise.all([(await writer).release(), (await s3).release(), s2.release()]);
    await (await late).release();
  });

  it("forceRelease from another client evicts the holder: its signal aborts at once, a waiter is granted with a higher token", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    const admin = client(endpoints, s).locks;
    // A long TTL: the watchdog's first extension comes after 10 s, so only the watch on the
    // evicted key can abort the signal within the bound below.
    const evicted = await a.acquire("k", { ttlMs: 30_000, holder: "old" });
    const waiting = b.acquire("k", { ttlMs: 30_000, holder: "next", timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(raw(endpoints), s.namespace)).length === 2);
    expect(await admin.forceRelease("k")).toBe(true);
    const next = await waiting;
    expect(next.fencingToken > evicted.fencingToken).toBe(true);
    await waitFor(() => evicted.signal.aborted, {
      timeoutMs: 3_000,
      message: "the evicted signal",
    });
    expect(codeOf(evicted.signal.reason)).toBe("LOCK_LOST");
    expect(codeOf(await evicted.extend().catch((e: unknown) => e))).toBe("LOCK_LOST");
    await evicted.release(); // owner-checked: leaves the new holder alone
    expect((await admin.inspect("k")).holders.map((h) => h.holder)).toEqual(["next"]);
    await next.release();
  });

  it("an eviction before the held key is watched (its first 250 ms) is replayed to the watch: the signal still aborts at once", async () => {
    const s = scope();
    const a = client(endpoints, s).locks;
    const admin = client(endpoints, s).locks;
    // 30 s TTL: the watchdog's first extension, the other way to notice, comes after 10 s.
    const evicted = await a.acquire("k", { ttlMs: 30_000 });
    expect(await admin.forceRelease("k")).toBe(true);
    expect(evicted.signal.aborted).toBe(false);
    await waitFor(() => evicted.signal.aborted, {
      timeoutMs: 3_000,
      message: "the evicted signal",
    });
    expect(codeOf(evicted.signal.reason)).toBe("LOCK_LOST");
  });

  it("an evicted hold's extension resolves false even before its watch reports the eviction", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const { backend } = client(endpoints, s);
    const admin = client(endpoints, s).backend;
    const request = createRequest({ key: "k", namespace: s.namespace, ttlMs: 5_000 });
    const grant = await backend.tryAcquire(request);
    expect(grant.granted).toBe(true);
    const hold = grant.granted ? grant.hold : undefined;
    // The backend is not bound to a core here: nothing reports the loss, extend must tell.
    expect(await admin.forceRelease!(request)).toBe(true);
    expect(await contenders(etcd, s.namespace)).toHaveLength(0);
    expect(await backend.extend(request, hold, 5_000)).toBe(false);
    await backend.release(request, hold);
    await backend.close();
  });

  it("forceRelease evicts every reader and every semaphore holder in one go; a free key gives false", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const [a, b, admin] = [1, 2, 3].map(() => client(endpoints, s).locks);
    expect(await admin!.forceRelease("k")).toBe(false);
    const readers = [
      await a!.acquire("k", { mode: "shared" }),
      await b!.acquire("k", { mode: "shared" }),
    ];
    const writer = admin!.acquire("k", { timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(etcd, s.namespace)).length === 3);
    expect(await admin!.forceRelease("k")).toBe(true);
    const w = await writer;
    expect(w.fencingToken > readers[1]!.fencingToken).toBe(true);
    await w.release();
    expect(await admin!.forceRelease("k")).toBe(false);
    const slots = [await a!.acquire("pool", { limit: 3 }), await b!.acquire("pool", { limit: 3 })];
    expect(await admin!.forceRelease("pool")).toBe(true);
    expect(await contenders(etcd, s.namespace, ["pool"])).toHaveLength(0);
    await waitFor(() => slots.every((lease) => lease.signal.aborted), { timeoutMs: 3_000 });
    await waitFor(() => readers.every((lease) => lease.signal.aborted), { timeoutMs: 3_000 });
  });

  it("the evicted holder's other locks on the same session lease stay held", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const admin = client(endpoints, s).locks;
    const evicted = await a.acquire("one", { ttlMs: 5_000 });
    const kept = await a.acquire("two", { ttlMs: 5_000 });
    const [one, two] = await contenders(etcd, s.namespace, ["one", "two"]);
    expect(one!.lease).toBe(two!.lease);
    expect(await admin.forceRelease("one")).toBe(true);
    await waitFor(() => evicted.signal.aborted, { timeoutMs: 3_000 });
    await kept.extend();
    expect(kept.signal.aborted).toBe(false);
    expect((await etcd.leaseClient.leaseTimeToLive({ ID: two!.lease })).TTL).not.toBe("-1");
    expect((await admin.inspect("two")).holders.map((h) => h.fencingToken)).toEqual([
      kept.fencingToken,
    ]);
    expect(await admin.tryAcquire("two")).toBeNull();
    // The session takes new locks too.
    const again = await a.acquire("one", { ttlMs: 5_000 });
    expect(again.fencingToken > evicted.fencingToken).toBe(true);
    await Promise.all([again.release(), kept.release()]);
  });
});

describe("faults", () => {
  const holderModule = fileURLToPath(new URL("./fixtures/holder.ts", import.meta.url));

  it("a SIGKILLed holder process: its key frees after the session lease TTL, not before", async () => {
    const s = scope();
    const ttlMs = 2_000;
    const child: ChildProcess = fork(holderModule, [], {
      execArgv: nodeChildArgs,
      env: {
        ...process.env,
        ETCD_ENDPOINTS: endpoints.join(","),
        LOCK_NAMESPACE: s.namespace,
        LOCK_KEY: "killed",
        LOCK_TTL_MS: String(ttlMs),
      },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    onTestFinished(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });
    const { token } = await new Promise<{ token: string }>((resolve, reject) => {
      child.once("message", (m) => resolve(m as { token: string }));
      child.once("exit", (code) => reject(new Error(`holder exited with ${code}`)));
    });
    const b = createLocks(etcdBackend({ hosts: endpoints }), { namespace: s.namespace });
    onTestFinished(() => b.close());
    expect(await b.tryAcquire("killed")).toBeNull();
    child.kill("SIGKILL");
    await exited;
    const killed = performance.now();
    const lease = await b.acquire("killed", { timeoutMs: 10_000 });
    const freedAfter = performance.now() - killed;
    // Freed by the lease running out (its last keepalive was about a third of the TTL
    // before the kill), not by the connection closing.
    expect(freedAfter).toBeGreaterThanOrEqual(ttlMs / 3);
    expect(freedAfter).toBeLessThan(ttlMs + 1_500);
    expect(lease.fencingToken > BigInt(token)).toBe(true);
    await lease.release();
  });

  it("server paused past the TTL: the holder's signal aborts on time; after resume another holds with a higher token", async () => {
    const server = await startEtcd();
    onTestFinished(() => server.stop());
    const hosts = [server.endpoint];
    const s = scope();
    const a = client(hosts, s).locks;
    const b = client(hosts, s).locks;
    const ttlMs = 2_000;
    const held = await a.acquire("k", { ttlMs });
    const paused = performance.now();
    server.pause();
    try {
      await waitFor(() => held.signal.aborted, { timeoutMs: ttlMs + 1_000 });
      const lostAfter = performance.now() - paused;
      expect(codeOf(held.signal.reason)).toBe("LOCK_LOST");
      // Declared at the local deadline: within the TTL of the last extension, not 2x TTL later.
      expect(lostAfter).toBeLessThanOrEqual(ttlMs + 250);
      // Stay paused until the lease has surely run out on the server too.
      await new Promise((resolve) => setTimeout(resolve, ttlMs + 500 - lostAfter));
    } finally {
      server.resume();
    }
    const next = await b.acquire("k", { ttlMs, timeoutMs: 15_000 });
    expect(next.fencingToken > held.fencingToken).toBe(true);
    await held.release(); // a lost lease: releasing it must not touch the new holder
    expect(await a.tryAcquire("k")).toBeNull();
    await next.release();
  });

  it("a client cut off from the server past the TTL: its signal aborts on time, another client takes over meanwhile", async () => {
    const proxy = await startProxy(endpoints[0]!);
    onTestFinished(() => proxy.close());
    const s = scope();
    const a = client([`${proxy.host}:${proxy.port}`], s).locks;
    const b = client(endpoints, s).locks;
    const ttlMs = 2_000;
    const held = await a.acquire("k", { ttlMs });
    const cut = performance.now();
    proxy.blackhole(true);
    await waitFor(() => held.signal.aborted, { timeoutMs: ttlMs + 1_000 });
    expect(performance.now() - cut).toBeLessThanOrEqual(ttlMs + 250);
    expect(codeOf(held.signal.reason)).toBe("LOCK_LOST");
    // The server frees the lock when the session lease runs out, while the holder is still cut off.
    const next = await b.acquire("k", { ttlMs, timeoutMs: 10_000 });
    expect(next.fencingToken > held.fencingToken).toBe(true);
    // Releasing the lost lease (it resolves) never touches the new holder's lock.
    await held.release();
    expect(await client(endpoints, s).locks.tryAcquire("k")).toBeNull();
    await next.release();
  });

  it("a take whose reply comes back after the TTL is never reported granted, and its key is cleaned up", async () => {
    const proxy = await startProxy(endpoints[0]!);
    onTestFinished(() => proxy.close());
    const s = scope();
    const a = client([`${proxy.host}:${proxy.port}`], s).locks;
    const b = client(endpoints, s).locks;
    // Open the session first, so that only the take itself is slow.
    await (await a.acquire("warm-up", { ttlMs: 1_000 })).release();
    proxy.delay(700); // each way: the reply comes 1.4 s after the request, past the 1 s TTL
    const outcome = await a.tryAcquire("k", { ttlMs: 1_000 }).then(
      (lease) => (lease === null ? "null" : "granted"),
      (error: unknown) => codeOf(error) ?? String(error),
    );
    expect(outcome).not.toBe("granted");
    proxy.delay(0);
    // Whatever the slow take wrote is deleted (released by owner, or with its retired session).
    const next = await b.acquire("k", { timeoutMs: 10_000 });
    await next.release();
  });

  it("server restarted: the holder keeps its lock (the lease is durable) and the queue resumes", async () => {
    const server = await startEtcd();
    onTestFinished(() => server.stop());
    const hosts = [server.endpoint];
    const s = scope();
    const a = client(hosts, s).locks;
    const b = client(hosts, s).locks;
    const held = await a.acquire("k", { ttlMs: 8_000 });
    const waiting = b.acquire("k", { ttlMs: 8_000, timeoutMs: 20_000 });
    await waitFor(async () => (await statusOf(b.backend, s.namespace, "k")).holders.length > 0);
    await server.kill("SIGKILL");
    await server.restart();
    // Extensions go through again after the restart.
    await held.extend();
    expect(held.signal.aborted).toBe(false);
    expect(await client(hosts, s).locks.tryAcquire("k")).toBeNull();
    await held.release();
    const next = await waiting;
    expect(next.fencingToken > held.fencingToken).toBe(true);
    await next.release();
  });

  it("leader killed in a 3-member cluster during a run of 4 contending clients: no overlap, the run finishes", async () => {
    const cluster = await startEtcdCluster({ members: 3 });
    onTestFinished(() => cluster.stop());
    const s = scope();
    const clients = [0, 1, 2, 3].map(() => client(cluster.endpoints, s).locks);
    const loops = 20;
    const history = new History();
    let grants = 0;
    const run = clients.map(async (locks, c) => {
      for (let done = 0; done < loops; ) {
        let lease: Lease;
        try {
          lease = await locks.acquire("hot", { ttlMs: 3_000, timeoutMs: 20_000 });
        } catch (error) {
          if (!isLockError(error, "BACKEND_UNAVAILABLE")) throw error;
          continue;
        }
        const end = history.begin(lease, `client${c}`);
        grants++;
        await new Promise((resolve) => setImmediate(resolve));
        end();
        // A release that fails is retried in the background by the backend.
        await lease.release().catch((error: unknown) => {
          if (!isLockError(error, "BACKEND_UNAVAILABLE")) throw error;
        });
        done++;
      }
    });
    await waitFor(() => grants >= 20, { timeoutMs: 20_000 });
    const leader = await cluster.leader();
    await leader.kill("SIGKILL");
    const killedAt = grants;
    await Promise.all(run);
    expect(grants).toBe(4 * loops);
    expect(killedAt).toBeLessThan(4 * loops);
    // Requests that failed during the election were retried, never reported as grants.
    history.assertValid({ fencing: true });
  });
});

describe("ttl floor", () => {
  it("declares minTtlMs in its frozen manifest; below it INVALID_ARGUMENT before any I/O; at it, fresh clients get their grants", async () => {
    const s = scope();
    const backend = etcdBackend({ hosts: endpoints });
    onTestFinished(() => backend.close());
    const floor = backend.capabilities.minTtlMs;
    expect(floor).toBe(250);
    expect(Object.isFrozen(backend.capabilities)).toBe(true);
    // No server at all: refused before any I/O.
    const nowhere = createLocks(etcdBackend({ hosts: `127.0.0.1:${await freePort()}` }), {
      namespace: s.namespace,
    });
    onTestFinished(() => nowhere.close());
    for (const ttlMs of [1, 3, floor! - 1]) {
      await expect(nowhere.tryAcquire("k", { ttlMs })).rejects.toMatchObject({
        code: "INVALID_ARGUMENT",
      });
    }
    // At the floor, each on a fresh client: connection, session lease and take all count.
    for (let i = 0; i < 4; i++) {
      const { locks } = client(endpoints, s);
      const lease = await locks.tryAcquire(`k${i}`, { ttlMs: floor! });
      expect(lease, `tryAcquire on fresh client ${i}`).not.toBeNull();
      await lease!.release();
      const again = await locks.acquire(`k${i}`, { ttlMs: floor!, timeoutMs: 5_000 });
      await again.release();
    }
  });

  it("a take answered after its TTL by a slow but healthy server is refused and cleaned up, not reported unavailable", async () => {
    const proxy = await startProxy(endpoints[0]!);
    onTestFinished(() => proxy.close());
    const s = scope();
    const a = client([`${proxy.host}:${proxy.port}`], s).locks;
    // Open the session (1 s lease for a 250 ms TTL) first, so that only the take is slow.
    await (await a.acquire("warm-up", { ttlMs: 250 })).release();
    proxy.delay(150); // each way: the reply comes 300 ms after the request, past the TTL
    const outcome = await a.tryAcquire("k", { ttlMs: 250 }).then(
      (lease) => (lease === null ? "null" : "granted"),
      (error: unknown) => codeOf(error) ?? String(error),
    );
    expect(outcome).toBe("null");
    proxy.delay(0);
    const b = client(endpoints, s).locks;
    const next = await b.acquire("k", { timeoutMs: 10_000 });
    await next.release();
  });
});

/**
 * No timer of the backend or the core is left once close() resolved (async hooks report a
 * cleared timer a moment later), and grpc-js has closed every socket shortly after.
 */
async function expectNothingLive(
  resources: ReturnType<typeof trackResources>,
  settleMs = 2_000,
): Promise<void> {
  const ours = () =>
    resources.live().filter((r) => r.owner === "etcd backend" || r.owner === "core");
  await waitFor(() => ours().length === 0, { timeoutMs: 100, intervalMs: 5 }).catch(() => {
    throw new Error(`still live:\n${describeResources(ours())}`);
  });
  await waitFor(() => resources.live().length === 0, { timeoutMs: settleMs }).catch(() => {
    throw new Error(`still live:\n${describeResources(resources.live())}`);
  });
}

describe("close", () => {
  it("server paused: an acquire in flight rejects with LOCK_CLOSED at close(), which resolves promptly and leaves no timer, stream or socket", async () => {
    const server = await startEtcd();
    onTestFinished(() => server.stop());
    const s = scope();
    const resources = trackResources();
    onTestFinished(() => resources.stop());
    const locks = createLocks(etcdBackend({ hosts: [server.endpoint] }), {
      namespace: s.namespace,
    });
    const other = createLocks(etcdBackend({ hosts: [server.endpoint] }), {
      namespace: s.namespace,
    });
    // A lease kept alive, a waiter in the revision queue, and a first attempt in flight.
    await locks.acquire("held", { ttlMs: 5_000 });
    const blocker = await other.acquire("queued", { ttlMs: 5_000 });
    const waiting = locks.acquire("queued", { ttlMs: 5_000 }).catch((e: unknown) => e);
    await waitFor(
      async () => (await statusOf(other.backend, s.namespace, "queued")).holders.length > 0,
    );
    server.pause();
    try {
      let settledAt = 0;
      const inflight = locks.acquire("k", { ttlMs: 5_000 }).then(
        () => "granted",
        (error: unknown) => {
          settledAt = performance.now();
          return codeOf(error) ?? String(error);
        },
      );
      await new Promise((resolve) => setImmediate(resolve));
      const closing = performance.now();
      await locks.close();
      const closedIn = performance.now() - closing;
      expect(await inflight).toBe("LOCK_CLOSED");
      expect(settledAt - closing).toBeLessThan(100);
      expect(codeOf(await waiting)).toBe("LOCK_CLOSED");
      // The core waits 250 ms for releases; the backend's own share must be small.
      expect(closedIn).toBeLessThan(800);
      // The other client holds a lease and a session too.
      const closingOther = performance.now();
      await other.close();
      expect(performance.now() - closingOther).toBeLessThan(800);
      expect(blocker.signal.aborted).toBe(true);
      // No timer of the backend or the core is left while the server is still paused. grpc-js
      // may still run a reconnect back-off timer of a subchannel it is tearing down, and has
      // half-closed its sockets (unref'd: they do not hold the process up); both are gone once
      // the paused server runs again (checked below, with everything else).
      const timers = () =>
        resources
          .live()
          .filter(
            (r) => r.type === "Timeout" && (r.owner === "etcd backend" || r.owner === "core"),
          );
      await waitFor(() => timers().length === 0, { timeoutMs: 100, intervalMs: 5 }).catch(() => {
        throw new Error(`still live:\n${describeResources(timers())}`);
      });
    } finally {
      server.resume();
    }
    // grpc-js backs off 1 s, then 1.6x (±20%), between reconnects of a subchannel it tears
    // down; a pause of a few seconds on a loaded machine leaves one such timer for up to ~5 s.
    await expectNothingLive(resources, 10_000);
  });

  it("close() with keep-alives running leaves no timer or interval of the backend active, and no socket", async () => {
    const s = scope();
    const resources = trackResources();
    onTestFinished(() => resources.stop());
    const locks = createLocks(etcdBackend({ hosts: endpoints }), {
      namespace: s.namespace,
    });
    const other = client(endpoints, s).locks;
    const etcd = new Etcd3({ hosts: [...endpoints] });
    // Two sessions (2 s and 5 s leases) kept alive, a watchdog, a waiter watching.
    await locks.acquire("a", { ttlMs: 2_000 });
    await locks.acquire("b", { ttlMs: 5_000, autoExtend: false });
    const blocker = await other.acquire("c");
    const waiting = locks.acquire("c").catch((e: unknown) => e);
    await waitFor(async () => (await contenders(etcd, s.namespace, ["a", "b", "c"])).length === 4);
    // Let a keepalive beat run (a third of the 2 s lease).
    await waitFor(() =>
      resources.live().some((r) => r.type === "Timeout" && r.owner === "etcd backend"),
    );
    await locks.close();
    expect(codeOf(await waiting)).toBe("LOCK_CLOSED");
    await blocker.release();
    await other.close();
    etcd.close();
    await expectNothingLive(resources);
  });
});

describe("limits", () => {
  it("inspect reports semaphore holders as exclusive with the key's limit; another limit is refused, waiting ones too", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s);
    const b = client(endpoints, s).locks;
    const s1 = await a.locks.acquire("pool", { limit: 2 });
    const s2 = await b.acquire("pool", { limit: 2 });
    const status = await statusOf(a.backend, s.namespace, "pool");
    expect(status.holders.length).toBeGreaterThan(0);
    expect(status.limit).toBe(2);
    expect(status.holders.map((h) => h.mode)).toEqual(["exclusive", "exclusive"]);
    expect(status.holders.map((h) => h.fencingToken)).toEqual([s1.fencingToken, s2.fencingToken]);
    const c = client(endpoints, s).locks;
    const refused = async (p: Promise<unknown>) => {
      const error = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(codeOf(error)).toBe("INVALID_ARGUMENT");
      expect((error as Error).message).toMatch(/limit 3|limit 2/);
    };
    await refused(c.tryAcquire("pool", { limit: 3 }));
    await refused(c.acquire("pool", { limit: 3, timeoutMs: 5_000 }));
    await refused(c.tryAcquire("pool"));
    await refused(c.tryAcquire("pool", { mode: "shared" }));
    // The same limit waits for a slot.
    const third = c.acquire("pool", { limit: 2, timeoutMs: 10_000 });
    await waitFor(async () => (await contenders(etcd, s.namespace, ["pool"])).length === 3);
    await s1.release();
    const s3 = await third;
    expect(s3.fencingToken > s2.fencingToken).toBe(true);
    await Promise.all([s2.release(), s3.release()]);
    // Held exclusively (limit 1): a semaphore waiter is refused, not queued.
    const x = await a.locks.acquire("pool");
    expect((await statusOf(a.backend, s.namespace, "pool")).limit).toBe(1);
    await refused(b.acquire("pool", { limit: 3, timeoutMs: 5_000 }));
    const d = client(endpoints, s).locks;
    const dWaits = d.acquire("pool", { limit: 3 }).then(
      () => "granted",
      (e: unknown) => codeOf(e),
    );
    expect(await dWaits).toBe("INVALID_ARGUMENT");
    // The backend's own blocking acquire (the revision queue) refuses it too, where its own
    // count alone would grant it (one holder, limit 3).
    const queued = a.backend.acquire!(
      createRequest({ key: "pool", namespace: s.namespace, limit: 3 }),
      { signal: new AbortController().signal },
    );
    expect(codeOf(await queued.catch((e: unknown) => e))).toBe("INVALID_ARGUMENT");
    // Refused contenders leave no key behind.
    await waitFor(async () => (await contenders(etcd, s.namespace, ["pool"])).length === 1);
    await x.release();
  });
});

describe("errors", () => {
  it("BACKEND_UNAVAILABLE names the endpoint it tried and the plain cause; the raw gRPC error stays in cause", async () => {
    const s = scope();
    const port = await freePort(); // free now: nothing listens, connections are refused
    const host = `127.0.0.1:${port}`;
    const locks = createLocks(etcdBackend({ hosts: host }), {
      namespace: s.namespace,
    });
    onTestFinished(() => locks.close());
    for (const attempt of [
      () => locks.tryAcquire("k"),
      () => locks.acquire("k", { timeoutMs: 5_000 }),
    ]) {
      const error = await attempt().then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(codeOf(error)).toBe("BACKEND_UNAVAILABLE");
      expect(error!.message).toBe(`etcd backend unavailable (tried ${host}): connection refused`);
      expect(String((error!.cause as Error).message)).toMatch(/ECONNREFUSED/);
    }
  });
});

describe("slow links and busy stores", () => {
  it("a grant from the revision queue over a slow link, autoExtend off: its signal aborts before another client can take the key", async () => {
    const proxy = await startProxy(endpoints[0]!);
    onTestFinished(() => proxy.close());
    const s = scope();
    const a = client(endpoints, s).locks;
    const slow = client([`${proxy.host}:${proxy.port}`], s).locks;
    const c = client(endpoints, s).locks;
    const etcd = raw(endpoints);
    await (await slow.acquire("warm-up", { ttlMs: 1_000 })).release();
    proxy.delay(100); // each way
    for (let round = 0; round < 3; round++) {
      const held = await a.acquire("k", { ttlMs: 5_000 });
      const queued = slow.acquire("k", { ttlMs: 1_000, autoExtend: false, timeoutMs: 20_000 });
      await waitFor(async () => (await contenders(etcd, s.namespace)).length === 2);
      await held.release();
      const lease = await queued;
      // What the holder believes (expiresAt, when its signal fires) never outlasts its TTL,
      // counted from when the grant reached it.
      expect(lease.expiresAt!).toBeLessThanOrEqual(Date.now() + 1_000);
      const next = c.acquire("k", { ttlMs: 5_000, timeoutMs: 20_000 });
      const taken = await next;
      // The moment another client holds the key, the slow holder already knows it lost it.
      expect(lease.signal.aborted, `round ${round}`).toBe(true);
      expect(taken.fencingToken > lease.fencingToken).toBe(true);
      await taken.release();
    }
  });

  it("handoffs while unrelated writes move the revision: none waits for the fallback poll", async () => {
    const s = scope();
    const etcd = raw(endpoints);
    const a = client(endpoints, s).locks;
    const b = client(endpoints, s).locks;
    let writing = true;
    let writes = 0;
    const writer = (async () => {
      while (writing) {
        await etcd.put(`${s.namespace}-noise/${writes % 8}`).value(String(writes));
        writes++;
      }
    })();
    onTestFinished(async () => {
      writing = false;
      await writer;
    });
    // Each holder releases the moment the next waiter's key is written: the release then
    // lands while the waiter reads its position and opens its watch, the window a waiter
    // must not lose a deletion in.
    let puts = 0;
    let onPut: (() => void) | undefined;
    const watcher = await etcd.watch().prefix(lockBase(s.namespace, "k")).only("put").create();
    onTestFinished(() => watcher.cancel());
    watcher.on("put", () => {
      puts++;
      onPut?.();
    });
    const handoffs = 60;
    const slow: number[] = [];
    let holder = await a.acquire("k");
    const clients = [a, b];
    for (let i = 1; i <= handoffs; i++) {
      const before = puts;
      const written = new Promise<void>((resolve) => {
        onPut = () => puts > before && resolve();
      });
      const next = clients[i % 2]!.acquire("k", { timeoutMs: 20_000 });
      await written;
      const released = performance.now();
      await holder.release();
      holder = await next;
      const took = performance.now() - released;
      if (took > 500) slow.push(Math.round(took));
    }
    await holder.release();
    writing = false;
    await writer;
    expect(writes).toBeGreaterThan(handoffs);
    // The fallback poll is 1 s: a handoff that missed its notification takes that long.
    expect(slow, `handoffs slower than 500 ms out of ${handoffs}`).toEqual([]);
  });
});

describe("back-off", () => {
  it("is cockatiel's, made in one module: no other source file builds a back-off or doubles a delay", () => {
    const dir = new URL("../src/", import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts") && f !== "backoff.ts")) {
      const source = readFileSync(new URL(file, dir), "utf8");
      expect(source, file).not.toMatch(/ExponentialBackoff|new \w*Backoff\(/);
      expect(source, file).not.toMatch(/delay\s*\*\s*2|Math\.min\(\s*delay/);
      expect(source, file).not.toMatch(/setTimeout\(\s*resolve\s*,/);
    }
    let backoff = retryBackoff();
    const delays: number[] = [];
    for (let i = 0; i < 12; i++) {
      delays.push(backoff.duration);
      backoff = backoff.next(undefined);
    }
    expect(Math.max(...delays)).toBeLessThanOrEqual(1_000);
    expect(delays.at(-1)).toBeGreaterThan(delays[0]!);
  });
});
