import { randomBytes } from "node:crypto";
import { createLocks, type Locks } from "@locks/core";
import { countOver, countRequests, type MariadbServer, untilSteady } from "@locks/testkit";
import { describe, expect, inject, it, onTestFinished } from "vitest";
import { mysqlBackend } from "../src/index.js";

/*
 * What waiters cost the server, counted from its `Questions` (statements
 * clients sent). A wait blocked in GET_LOCK sends one statement per 30 s;
 * waits beyond maxConnections must not poll (the core's back-off reaches
 * one attempt per 100 ms per key per client: about 1 per waiter per second
 * here). The bound is generous.
 */

const uri = inject("mysqlUrl");
// countRequests needs only the address (and the shape) of the server.
const server = { url: uri, limitedUrl: uri } as unknown as MariadbServer;

function client(ns: string, maxConnections?: number): Locks {
  const backend = mysqlBackend({ uri, ...(maxConnections ? { maxConnections } : {}) });
  const locks = createLocks(backend, { namespace: ns });
  onTestFinished(() => locks.close());
  return locks;
}

describe("waiting at scale", () => {
  it("40 waiters in 4 clients, more than their connections: nothing per waiter while idle", async () => {
    const ns = `wait-${randomBytes(6).toString("hex")}`;
    const lease = await client(ns).acquire("k");
    // 3 wait connections per client: 12 waits blocked in GET_LOCK, 28 lined up in the clients.
    const clients = Array.from({ length: 4 }, () => client(ns, 4));
    const WAITERS = 40;
    let granted = 0;
    const done = Array.from({ length: WAITERS }, (_, i) =>
      (clients[i % clients.length] as Locks).acquire("k", { timeoutMs: 60_000 }).then((l) => {
        granted++;
        return l.release();
      }),
    );
    // Every acquire's first attempt and wait are under way once the count stops moving.
    const count = () => countRequests(server);
    await untilSteady(count, { timeoutMs: 20_000 });
    const { requests, seconds } = await countOver(count, 3_000);
    expect(
      requests / WAITERS / seconds,
      `${requests} statements in ${seconds} s`,
    ).toBeLessThanOrEqual(0.1);
    await lease.release();
    await Promise.all(done);
    expect(granted).toBe(WAITERS);
  });
});
