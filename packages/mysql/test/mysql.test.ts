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

/** How many connections wait in GET_LOCK in the server. */
async function waitsInServer(): Promise<number> {
  const [rows] = await admin.query(
    "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'",
  );
  return Number((rows as { n: number }[])[0]?.n);
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
});

describe("holder labels, inspect and forceRelease", () => {
  it("another client reads the label, mode and token of the grant; a later grant without a label shows none", async () => {
    const ns = namespace();
    const a = client(ns);
    const b = client(ns);
    const label = "wörker 7 'q\" 🔒\n";
    expect(await b.inspect("i")).toEqual({ key: "i", holders: [], limit: undefined });
    const lease = await a.acquire("i", { holder: label });
    expect(await b.inspect("i")).toEqual({
      key: "i",
      holders: [
        {
          holder: label,
          mode: "exclusive",
          fencingToken: lease.fencingToken,
          expiresAt: undefined,
        },
      ],
    });
    await lease.release();
    expect((await b.inspect("i")).holders).toEqual([]);
    const unlabelled = await a.acquire("i");
    expect((await b.inspect("i")).holders).toEqual([
      {
        holder: undefined,
        mode: "exclusive",
        fencingToken: unlabelled.fencingToken,
        expiresAt: undefined,
      },
    ]);
    await unlabelled.release();
  });

  it("a waiter granted in the server stores its label too", async () => {
    const ns = namespace();
    const a = client(ns);
    const b = client(ns);
    const held = await a.acquire("w", { holder: "first" });
    const waiting = b.acquire("w", { holder: "second", timeoutMs: 10_000 });
    await waitFor(async () => (await waitsInServer()) >= 1, { message: "b waits in the server" });
    await held.release();
    const lease = await waiting;
    expect((await a.inspect("w")).holders.map((h) => [h.holder, h.fencingToken])).toEqual([
      ["second", lease.fencingToken],
    ]);
    await lease.release();
  });

  it("a fencing table of 0.1 (no label columns) gets them at the first labelled grant; its tokens go on", async () => {
    const ns = namespace();
    const table = `fencing_old_${randomBytes(4).toString("hex")}`;
    await admin.query(
      `CREATE TABLE ${table} (k BINARY(32) NOT NULL PRIMARY KEY, token BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB`,
    );
    onTestFinished(() => admin.query(`DROP TABLE ${table}`).then(() => undefined));
    const locks = client(ns, { uri, fencingTable: table });
    const first = await locks.acquire("m");
    await first.release();
    const labelled = await locks.acquire("m", { holder: "after" });
    expect(labelled.fencingToken).toBeGreaterThan(first.fencingToken);
    expect((await locks.inspect("m")).holders.map((h) => h.holder)).toEqual(["after"]);
    await labelled.release();
  });

  it("forceRelease KILLs the holder's session: its leases abort at once, a waiter is granted with a higher token, and the evicted client acquires again", async () => {
    const ns = namespace();
    const victim = client(ns);
    const waiter = client(ns);
    const operator = client(ns);
    const evicted = await victim.acquire("f", { holder: "victim" });
    // Another lock on the same session: lost with it.
    const bystander = await victim.acquire("other");
    const id = await holder(ns, "f");
    const waiting = waiter.acquire("f", { holder: "waiter", timeoutMs: 10_000 });
    await waitFor(async () => (await waitsInServer()) >= 1, { message: "the waiter waits" });
    expect(await operator.forceRelease("f")).toBe(true);
    await waitFor(() => evicted.signal.aborted && bystander.signal.aborted, {
      timeoutMs: 5_000,
      message: "the evicted session's leases are signalled",
    });
    expect(codeOf(evicted.signal.reason)).toBe("LOCK_LOST");
    expect(codeOf(bystander.signal.reason)).toBe("LOCK_LOST");
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(evicted.fencingToken);
    expect((await operator.inspect("f")).holders.map((h) => h.holder)).toEqual(["waiter"]);
    // The evicted lease's release leaves the new holder alone.
    await evicted.release();
    expect(await holder(ns, "f")).not.toBeNull();
    expect(await holder(ns, "f")).not.toBe(id);
    // The evicted client opens a new session.
    const again = await victim.acquire("g", { timeoutMs: 5_000 });
    expect(await holder(ns, "g")).not.toBe(id);
    await Promise.all([again.release(), next.release()]);
  });

  it("forceRelease of a key nobody holds resolves false and ends no session", async () => {
    const ns = namespace();
    const a = client(ns);
    const lease = await a.acquire("held");
    expect(await a.forceRelease("free")).toBe(false);
    expect(lease.signal.aborted).toBe(false);
    // extend() asks the server: the session still holds it.
    await lease.extend();
    await lease.release();
  });

  it("a forceRelease racing a grant on the same session never leaves a lease that is not held", async () => {
    const ns = namespace();
    const a = client(ns, { uri, maxConnections: 1 });
    for (let i = 0; i < 5; i++) {
      const key = `race${i}`;
      const [lease, freed] = await Promise.all([
        i % 2 === 0 ? a.tryAcquire(key) : a.acquire(key),
        a.forceRelease(key),
      ]);
      // Either order is fine; a lease that is not aborted holds the lock on the server.
      const held = await holder(ns, key);
      if (freed) expect(held).toBeNull();
      expect(lease !== null && !lease.signal.aborted).toBe(held !== null);
      await lease?.release();
    }
  });

  it("forceRelease of a key held on the client's own session releases it there, without ending the session", async () => {
    const ns = namespace();
    const a = client(ns, { uri, maxConnections: 1 });
    const [mine, kept] = await Promise.all([a.acquire("own"), a.acquire("kept")]);
    const id = await holder(ns, "own");
    expect(await a.forceRelease("own")).toBe(true);
    expect(mine.signal.aborted).toBe(true);
    expect(await holder(ns, "own")).toBeNull();
    expect(kept.signal.aborted).toBe(false);
    expect(await holder(ns, "kept")).toBe(id);
    const next = await a.acquire("own");
    expect(next.fencingToken).toBeGreaterThan(mine.fencingToken);
    await Promise.all([next.release(), kept.release()]);
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

  it("forceRelease by a user that may not KILL another user's session: BACKEND_UNAVAILABLE that says what to grant", async () => {
    const ns = namespace();
    const owner = client(ns, { uri: server.url });
    const lease = await owner.acquire("x");
    const limited = client(ns, { uri: server.limitedUrl });
    const error = await limited.forceRelease("x").catch((e: unknown) => e);
    expect(codeOf(error)).toBe("BACKEND_UNAVAILABLE");
    expect((error as Error).message).toMatch(/KILL CONNECTION.*CONNECTION_ADMIN/);
    expect(lease.signal.aborted).toBe(false);
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
