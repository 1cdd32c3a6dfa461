import { randomBytes } from "node:crypto";
import { createLocks, isLockError, type Locks } from "@locks/core";
import { createRequest } from "@locks/core/backend";
import { type MariadbServer, startMariadb, startProxy, waitFor } from "@locks/testkit";
import mysql, { type Connection } from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { mysqlBackend } from "../src/index.js";

const uri = inject("mysqlUrl");

let admin: Connection;
beforeAll(async () => {
  admin = await mysql.createConnection(uri);
});
afterAll(() => admin.end());

function namespace(): string {
  return `my-${randomBytes(6).toString("hex")}`;
}

/** A lock client over a fresh backend, closed when the test ends. */
function client(ns: string, options: Parameters<typeof mysqlBackend>[0] = { uri }): Locks {
  const locks = createLocks(mysqlBackend(options), { namespace: ns });
  onTestFinished(() => locks.close());
  return locks;
}

/** The connection id holding (namespace, key), or null. */
async function holder(ns: string, key: string): Promise<number | null> {
  const name = createRequest({ namespace: ns, key }).digest.toString("hex");
  const [rows] = await admin.query("SELECT IS_USED_LOCK(?) AS id", [name]);
  const id = (rows as { id: number | null }[])[0]?.id;
  return id === null || id === undefined ? null : Number(id);
}

function codeOf(error: unknown): string | undefined {
  return isLockError(error) ? error.code : undefined;
}

describe("sessions", () => {
  it("KILL of the session aborts every lease on it at once; the key goes on with a higher token", async () => {
    const ns = namespace();
    const victim = client(ns);
    const other = client(ns);
    const leases = await Promise.all(["k1", "k2", "k3"].map((k) => victim.acquire(k)));
    const id = await holder(ns, "k1");
    expect(id).toBeTypeOf("number");
    expect(await holder(ns, "k3")).toBe(id);
    const waiting = other.acquire("k1", { timeoutMs: 10_000 });
    const killed = performance.now();
    await admin.query(`KILL ${id}`);
    await waitFor(() => leases.every((lease) => lease.signal.aborted), {
      timeoutMs: 5_000,
      message: "every lease is signalled",
    });
    expect(performance.now() - killed).toBeLessThan(1_000);
    for (const lease of leases) expect(codeOf(lease.signal.reason)).toBe("LOCK_LOST");
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(leases[0]!.fencingToken);
    // The victim's client opens a new session for later acquires.
    const again = await victim.acquire("k4", { timeoutMs: 5_000 });
    expect(await holder(ns, "k4")).not.toBe(id);
    await again.release();
    await next.release();
  });

  it("with heartbeatMs, a silent partition is signalled as a loss within about two heartbeats", async () => {
    const proxy = await startProxy(uri);
    onTestFinished(() => proxy.close());
    const ns = namespace();
    const locks = client(ns, { uri: proxy.url!, heartbeatMs: 200, connectTimeoutMs: 2_000 });
    const lease = await locks.acquire("p");
    const cut = performance.now();
    proxy.blackhole(true);
    // A statement in flight on the silent session settles when the heartbeat gives up on it.
    const inFlight = locks.tryAcquire("q").catch((e: unknown) => e);
    await waitFor(() => lease.signal.aborted, {
      timeoutMs: 5_000,
      message: "the lease is signalled",
    });
    expect(performance.now() - cut).toBeLessThan(1_000);
    expect(codeOf(lease.signal.reason)).toBe("LOCK_LOST");
    expect(codeOf(await inFlight)).toBe("BACKEND_UNAVAILABLE");
    expect(performance.now() - cut).toBeLessThan(1_500);
    proxy.blackhole(false);
  });

  it("with heartbeatMs, a statement in flight on a session that holds nothing settles through a silent partition", async () => {
    const proxy = await startProxy(uri);
    onTestFinished(() => proxy.close());
    const locks = client(namespace(), { uri: proxy.url!, heartbeatMs: 200, maxConnections: 1 });
    await (await locks.acquire("warm")).release();
    proxy.blackhole(true);
    const cut = performance.now();
    const error = await locks.tryAcquire("q").catch((e: unknown) => e);
    expect(codeOf(error)).toBe("BACKEND_UNAVAILABLE");
    expect(performance.now() - cut).toBeLessThan(1_500);
    proxy.blackhole(false);
    // The next call opens a new session.
    expect(await locks.tryAcquire("q")).not.toBeNull();
  });

  it("inspect reports the holder with the token of its grant", async () => {
    const ns = namespace();
    const backend = mysqlBackend({ uri });
    const locks = createLocks(backend, { namespace: ns });
    onTestFinished(() => locks.close());
    expect(await backend.inspect!(ns, "i")).toEqual({ held: false, holders: [] });
    const lease = await locks.acquire("i");
    expect(await backend.inspect!(ns, "i")).toEqual({
      held: true,
      limit: 1,
      holders: [{ mode: "exclusive", fencingToken: lease.fencingToken }],
    });
  });
});

describe("connections", () => {
  it("waits block in the server on connections of their own (up to maxConnections), which then hold the lock", async () => {
    const ns = namespace();
    const a = client(ns);
    const b = client(ns, { uri, maxConnections: 3 });
    const keys = ["w1", "w2", "w3"];
    const held = await Promise.all(keys.map((k) => a.acquire(k)));
    // b's session exists before the waits start: its first attempt runs on it.
    await (await b.acquire("warm")).release();
    const waits = keys.map((k) => b.acquire(k, { timeoutMs: 10_000 }));
    await waitFor(
      async () => {
        const [rows] = await admin.query(
          "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'",
        );
        return Number((rows as { n: number }[])[0]?.n) === 2;
      },
      { message: "two waits in the server (the third polls)" },
    );
    const released = performance.now();
    await Promise.all(held.map((lease) => lease.release()));
    const leases = await Promise.all(waits);
    expect(performance.now() - released).toBeLessThan(1_000);
    const ids = await Promise.all(keys.map((k) => holder(ns, k)));
    expect(new Set(ids).size).toBe(3);
    // A wait connection's death loses its lease only.
    await admin.query(`KILL ${ids[0]}`);
    await waitFor(() => leases[0]!.signal.aborted, {
      message: "the lease on the killed connection",
    });
    expect(leases[1]!.signal.aborted || leases[2]!.signal.aborted).toBe(false);
    await Promise.all(leases.map((lease) => lease.release()));
    // The wait connections close with their release, but one, kept for the next wait.
    const left = async (): Promise<number> => {
      const [rows] = await admin.query(
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID IN (?)",
        [ids],
      );
      return Number((rows as { n: number }[])[0]?.n);
    };
    await waitFor(async () => (await left()) === 2, {
      message: "b's session and one spare wait connection are left",
    });
    // The next wait runs on the spare: no new connection.
    const blocker = await a.acquire("w4");
    const next = b.acquire("w4", { timeoutMs: 10_000 });
    await waitFor(
      async () => {
        const [rows] = await admin.query(
          "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'",
        );
        return Number((rows as { n: number }[])[0]?.n) === 1;
      },
      { message: "the next wait in the server" },
    );
    await blocker.release();
    const lease = await next;
    expect(ids).toContain(await holder(ns, "w4"));
    await lease.release();
  });

  it("a Pool is refused as a connection; as `pool`, one connection of it holds every lock and goes back at close()", async () => {
    const pool = mysql.createPool({ uri, connectionLimit: 3 });
    onTestFinished(() => pool.end());
    expect(() => mysqlBackend({ connection: pool as unknown as Connection })).toThrow(
      /options\.connection.*Pool/s,
    );
    const ns = namespace();
    const locks = createLocks(mysqlBackend({ pool }), { namespace: ns });
    const [a, b] = await Promise.all([locks.acquire("a"), locks.acquire("b")]);
    const id = await holder(ns, "a");
    expect(await holder(ns, "b")).toBe(id);
    await a.release();
    await b.release();
    await locks.close();
    // Back in the pool, unlocked; the pool stays open.
    const conn = await pool.getConnection();
    expect(conn.threadId).toBe(id);
    const [rows] = await conn.query("SELECT 1 AS one");
    expect(rows).toEqual([{ one: 1 }]);
    conn.release();
  });

  it("a given connection holds the locks, is never closed, and its loss is signalled", async () => {
    const conn = await mysql.createConnection(uri);
    conn.on("error", () => undefined);
    const ns = namespace();
    const locks = client(ns, { connection: conn });
    const lease = await locks.acquire("g");
    expect(await holder(ns, "g")).toBe(conn.threadId);
    await admin.query(`KILL ${conn.threadId}`);
    await waitFor(() => lease.signal.aborted, { timeoutMs: 5_000, message: "the lease is lost" });
    const error = await locks.acquire("g2", { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(codeOf(error)).toBe("BACKEND_UNAVAILABLE");

    const alive = await mysql.createConnection(uri);
    const kept = createLocks(mysqlBackend({ connection: alive }), { namespace: ns });
    await (await kept.acquire("h")).release();
    await kept.close();
    const [rows] = await alive.query("SELECT 2 AS two");
    expect(rows).toEqual([{ two: 2 }]);
    await alive.end();
  });
});

describe("a server of its own", () => {
  let server: MariadbServer;
  beforeAll(async () => {
    server = await startMariadb();
  }, 30_000);
  afterAll(() => server?.stop());

  it("without the privilege to create the fencing table: BACKEND_UNAVAILABLE that says what to grant", async () => {
    const locks = client(namespace(), { uri: server.limitedUrl, fencingTable: "fencing_limited" });
    const error = await locks.acquire("x", { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(codeOf(error)).toBe("BACKEND_UNAVAILABLE");
    expect((error as Error).message).toMatch(
      /CREATE TABLE `fencing_limited`.*GRANT SELECT, INSERT, UPDATE/,
    );
  });

  it("server SIGSTOPped: close() resolves well under a second; acquires in flight and waits in the server reject with LOCK_CLOSED", async () => {
    const ns = namespace();
    const other = client(ns, { uri: server.url });
    await other.acquire("w");
    const locks = createLocks(mysqlBackend({ uri: server.url }), { namespace: ns });
    await locks.acquire("s");
    const waitingInServer = locks.acquire("w", { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 100));
    server.pause();
    try {
      const inFlight = locks.acquire("t", { timeoutMs: 10_000 }).catch((e: unknown) => e);
      const started = performance.now();
      await locks.close();
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(codeOf(await inFlight)).toBe("LOCK_CLOSED");
      expect(codeOf(await waitingInServer)).toBe("LOCK_CLOSED");
    } finally {
      server.resume();
    }
  });

  it("a server restart: every lease is signalled lost, and tokens keep increasing afterwards", async () => {
    const ns = namespace();
    const locks = client(ns, { uri: server.url, fencingTable: "locks.fencing_restart" });
    const before = await Promise.all([locks.acquire("r1"), locks.acquire("r2")]);
    await server.restart();
    await waitFor(() => before.every((lease) => lease.signal.aborted), {
      timeoutMs: 5_000,
      message: "every lease is signalled",
    });
    const after = await locks.acquire("r1", { timeoutMs: 10_000 });
    expect(after.fencingToken).toBeGreaterThan(before[0]!.fencingToken);
    await after.release();
  }, 30_000);
});

describe("options", () => {
  it("refuses bad options synchronously with INVALID_ARGUMENT", () => {
    const bad: unknown[] = [
      undefined,
      {},
      { uri, pool: {} },
      { uri: "" },
      { uri, extra: 1 },
      { uri, fencingTable: "a.b.c" },
      { uri, fencingTable: "drop table`" },
      { uri, heartbeatMs: -1 },
      { uri, connectTimeoutMs: 0 },
      { connection: { query() {} } },
      { pool: { getConnection() {} } },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        mysqlBackend(options as Parameters<typeof mysqlBackend>[0]);
      } catch (e) {
        error = e;
      }
      expect(codeOf(error), JSON.stringify(options)).toBe("INVALID_ARGUMENT");
    }
  });
});
