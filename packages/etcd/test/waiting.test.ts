/*
 * What waiting costs the server: idle waiters send nothing (they rely on
 * their watches), a handoff is a few requests, and a broken watch stream is
 * recovered by watching again, not by polling. Counted on a server of this
 * file's own, so that other test files' requests do not count.
 */
import { randomBytes } from "node:crypto";
import { createLocks, type Lease, type Locks } from "@locks/core";
import { createRequest, type KeyEvent } from "@locks/core/backend";
import {
  countOver,
  type EtcdServer,
  httpRequest,
  startEtcd,
  startProxy,
  untilSteady,
  waitFor,
} from "@locks/testkit";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { etcdBackend } from "../src/index.js";

let server: EtcdServer;
beforeAll(async () => {
  server = await startEtcd();
});
afterAll(() => server?.stop());

function client(namespace: string, hosts = [server.endpoint]): Locks {
  const locks = createLocks(etcdBackend({ hosts }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

/**
 * gRPC requests the server has handled so far: every unary call (Txn, Range,
 * DeleteRange, LeaseGrant ...) and every stream when it ends (a keepalive);
 * the messages on the open watch stream (a watch opened or cancelled) cost
 * no round trip and no consensus, and are not counted.
 */
async function handled(): Promise<number> {
  const reply = await httpRequest(`${server.endpoint}/metrics`);
  let total = 0;
  for (const [, value] of reply.body.matchAll(/^grpc_server_handled_total\{[^}]*\}\s+(\S+)$/gm))
    total += Number(value);
  return total;
}

describe("idle waiters and handoffs", () => {
  it("40 waiters in 2 clients idle on a held key cost at most 0.1 requests per waiter per second; a handoff at most 4", async () => {
    const namespace = `ns-${randomBytes(5).toString("hex")}`;
    const holder = client(namespace);
    const clients = [client(namespace), client(namespace)];
    const held = await holder.acquire("k");
    const waiters = 40;
    const before = await handled();
    const granted: Array<Promise<Lease>> = [];
    let grants = 0;
    for (let i = 0; i < waiters; i++) {
      const acquired = clients[i % 2]!.acquire("k", { timeoutMs: 60_000 });
      const done = acquired.then(async (lease) => {
        grants++;
        await lease.release();
        return lease;
      });
      done.catch(() => undefined); // awaited below; a failed test closes the clients first
      granted.push(done);
    }
    // Every waiter has joined once its put was handled (a Txn each).
    await waitFor(async () => (await handled()) - before >= waiters, {
      message: "the waiters' puts",
      timeoutMs: 20_000,
    });
    // Settling (a read where writes moved the revision under a new watch) is not idling:
    // measure over a window that starts once the count stood still for a moment.
    await untilSteady(handled, { message: "the waiters settling", timeoutMs: 20_000 });
    const { requests, seconds } = await countOver(handled, 3_000);
    expect(
      requests / waiters / seconds,
      `${requests} requests in ${seconds} s`,
    ).toBeLessThanOrEqual(0.1);

    // Handoffs: each waiter releases the moment it is granted, so the 40 grants are a chain.
    const handoffsBefore = await handled();
    await held.release();
    await Promise.all(granted);
    expect(grants).toBe(waiters);
    const perHandoff = ((await handled()) - handoffsBefore) / waiters;
    // The holder's delete, and at most a read of the waiter behind the next one; the puts
    // were counted before. Generous: keepalives and extensions may fall in the window.
    expect(perHandoff, `requests per handoff`).toBeLessThanOrEqual(4);
  }, 60_000);

  it("a handoff between two clients, each joining the queue anew, costs at most 3.5 requests: no read between the release and the grant", async () => {
    const namespace = `ns-${randomBytes(5).toString("hex")}`;
    const clients = [client(namespace), client(namespace)];
    let holder = await clients[0]!.acquire("k");
    const handoffs = 30;
    const before = await handled();
    for (let i = 1; i <= handoffs; i++) {
      // The next waiter's key is written (its put handled) before the holder lets go.
      const joined = (await handled()) + 1;
      const next = clients[i % 2]!.acquire("k", { timeoutMs: 20_000 });
      await waitFor(async () => (await handled()) >= joined, { message: "the waiter's put" });
      await holder.release();
      holder = await next;
    }
    await holder.release();
    // Each handoff: the waiter's first attempt (a read: the lock was found taken before), its
    // put, the holder's delete; the waiter takes the lock from the watch event, with no read
    // (a read there made it 4). Generous: keepalives may fall in the window.
    const perHandoff = ((await handled()) - before) / handoffs;
    expect(perHandoff).toBeLessThanOrEqual(3.5);
  }, 60_000);
});

describe("broken watch streams", () => {
  it("a waiter whose watch stream breaks watches again and is still woken by the release", async () => {
    const proxy = await startProxy(server.endpoint);
    onTestFinished(() => proxy.close());
    const namespace = `ns-${randomBytes(5).toString("hex")}`;
    const a = client(namespace);
    const b = client(namespace, [`${proxy.host}:${proxy.port}`]);
    const held = await a.acquire("k");
    const waiting = b.acquire("k", { timeoutMs: 20_000 });
    const before = await handled();
    await waitFor(async () => (await handled()) > before, { message: "the waiter's put" });
    proxy.resetAll();
    await waitFor(() => proxy.connections > 0, { message: "the waiter's reconnect" });
    await held.release();
    const next = await waiting;
    await next.release();
  });

  it("subscribe: 'unsure' when the watch stream breaks, 'changed' once it is watched again, and at a release", async () => {
    const proxy = await startProxy(server.endpoint);
    onTestFinished(() => proxy.close());
    const namespace = `ns-${randomBytes(5).toString("hex")}`;
    const a = client(namespace);
    const backend = etcdBackend({ hosts: [`${proxy.host}:${proxy.port}`] });
    onTestFinished(() => backend.close());
    const events: Array<KeyEvent | undefined> = [];
    const stop = await backend.subscribe!(createRequest({ key: "k", namespace }), (event) =>
      events.push(event),
    );
    onTestFinished(() => stop());
    proxy.resetAll();
    await waitFor(() => events.includes("unsure"), { message: "unsure" });
    await waitFor(() => events.at(-1) === "changed", { message: "changed after the reconnect" });
    const seen = events.length;
    const lease = await a.acquire("k");
    await lease.release();
    await waitFor(() => events.length > seen && events.at(-1) === "changed", {
      message: "changed at the release",
    });
  });
});
