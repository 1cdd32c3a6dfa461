import { randomBytes } from "node:crypto";
import { createLocks, type Locks } from "@locks/core";
import { type Backend, createRequest, type KeyEvent } from "@locks/core/backend";
import {
  countOver,
  countStatements,
  type PostgresServer,
  startPostgres,
  untilSteady,
  waitFor,
} from "@locks/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { postgresBackend } from "../src/index.js";
import { idHalves, idsOf } from "../src/keys.js";

/*
 * What waiters cost the server, counted with pg_stat_statements (every
 * statement once it ends; a wait in the lock queue counts when it is
 * granted). Bounds are generous: they tell "nothing per waiter while idle,
 * a couple of statements per handoff" from the per-waiter polling (about
 * one attempt per second each) and the wake-everybody handoffs (every
 * client's poller attempting after every release) they replaced.
 */

let server: PostgresServer;
let admin: pg.Client;
beforeAll(async () => {
  server = await startPostgres({ settings: { shared_preload_libraries: "pg_stat_statements" } });
  admin = new pg.Client({ connectionString: server.connectionString });
  admin.on("error", () => undefined);
  await admin.connect();
});
afterAll(async () => {
  await admin?.end();
  await server?.stop();
});

function namespace(): string {
  return `wait-${randomBytes(6).toString("hex")}`;
}

function client(ns: string, options: { maxConnections?: number } = {}): Locks {
  const backend = postgresBackend({ connectionString: server.connectionString, ...options });
  const locks = createLocks(backend, { namespace: ns });
  onTestFinished(() => locks.close());
  return locks;
}

/** Advisory lock requests waiting in the server's queue. */
async function queued(): Promise<number> {
  const { rows } = await admin.query(
    "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
  );
  return rows[0].n;
}

describe("waiting at scale", () => {
  it("40 waiters in 4 clients, more than their queue connections: nothing per waiter while idle, about 2 statements per handoff", async () => {
    const ns = namespace();
    const holder = client(ns);
    const lease = await holder.acquire("k");
    // 3 queue connections per client: 12 waits in the server's queue, 28 in the clients.
    const clients = Array.from({ length: 4 }, () => client(ns, { maxConnections: 4 }));
    const WAITERS = 40;
    let granted = 0;
    const done = Array.from({ length: WAITERS }, (_, i) =>
      (clients[i % clients.length] as Locks).acquire("k", { timeoutMs: 60_000 }).then((l) => {
        granted++;
        return l.release();
      }),
    );
    await waitFor(async () => (await queued()) >= 9, { timeoutMs: 20_000 });
    // Every acquire's first attempt is over once the count stops moving.
    const count = () => countStatements(server);
    await untilSteady(count, { timeoutMs: 20_000 });
    const { requests, seconds } = await countOver(count, 3_000);
    expect(
      requests / WAITERS / seconds,
      `${requests} statements in ${seconds} s`,
    ).toBeLessThanOrEqual(0.1);

    const before = await countStatements(server);
    await lease.release();
    await Promise.all(done);
    expect(granted).toBe(WAITERS);
    const perHandoff = ((await countStatements(server)) - before) / WAITERS;
    expect(perHandoff, `statements per handoff (${WAITERS} handoffs)`).toBeLessThanOrEqual(3.5);
  });

  it("a wait lined up behind one that gives up takes over its connection, and is granted at the release", async () => {
    const ns = namespace();
    const lease = await client(ns).acquire("k");
    // One queue connection: the second wait lines up behind the first.
    const waiting = client(ns, { maxConnections: 2 });
    const first = waiting.acquire("k", { timeoutMs: 500 }).then(
      () => "granted",
      (error: { code?: string }) => error.code,
    );
    await waitFor(async () => (await queued()) === 1);
    const second = waiting.acquire("k", { timeoutMs: 30_000 });
    expect(await first).toBe("LOCK_TIMEOUT");
    // The second wait joined the server's queue on the first one's connection.
    await waitFor(async () => (await queued()) === 1);
    await lease.release();
    const next = await second;
    expect(next.fencingToken).toBeGreaterThan(lease.fencingToken);
    await next.release();
  });

  it("a subscription reports 'unsure' when its session ends, and 'changed' once it listens on the next", async () => {
    const backend: Backend = postgresBackend({ connectionString: server.connectionString });
    onTestFinished(() => backend.close());
    const events: (KeyEvent | undefined)[] = [];
    const key = createRequest({ namespace: namespace(), key: "watched" });
    const unsubscribe = await backend.subscribe?.(key, (event) => events.push(event));
    onTestFinished(async () => unsubscribe?.());
    expect(events).toEqual([]);
    // The session holding the key's interest marker (the watch) is the one listening.
    const { classid, objid } = idHalves(idsOf(key).interest);
    const { rows } = await admin.query(
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid AND objid = $2::oid",
      [classid, objid],
    );
    expect(rows).toHaveLength(1);
    await admin.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
    await waitFor(() => events.includes("changed"));
    expect(events.slice(0, 2)).toEqual(["unsure", "changed"]);
    // Listening again: a release from another client wakes it.
    const other = client(key.namespace);
    const lease = await other.acquire("watched");
    const seen = events.length;
    await lease.release();
    await waitFor(() => events.length > seen);
    expect(events[seen]).toBeUndefined();
  });
});
