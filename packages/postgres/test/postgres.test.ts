import { randomBytes } from "node:crypto";
import { createLocks, isLockError, type Lease, type Locks } from "@locks/core";
import { createRequest, keyDigest } from "@locks/core/backend";
import { History, historyNow } from "@locks/core/history";
import { freePort, LockChild, startPostgres, startProxy, waitFor } from "@locks/testkit";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from "vitest";
import { postgresBackend } from "../src/index.js";
import { idHalves, idsOf, slotIds } from "../src/keys.js";

const databaseUrl = inject("databaseUrl");

let admin: pg.Client;
beforeAll(async () => {
  admin = new pg.Client({ connectionString: databaseUrl });
  admin.on("error", () => undefined);
  await admin.connect();
});
afterAll(async () => {
  await admin.end();
});

/** The advisory id of `key` in `ns`. */
function advisoryId(ns: string, key: string): string {
  return idsOf(createRequest({ namespace: ns, key })).key;
}

function namespace(): string {
  return `pg-${randomBytes(6).toString("hex")}`;
}

/** A lock client over a fresh backend, closed when the test ends. */
function client(ns: string, options: Parameters<typeof postgresBackend>[0] = {}): Locks {
  const locks = createLocks(postgresBackend({ connectionString: databaseUrl, ...options }), {
    namespace: ns,
  });
  onTestFinished(() => locks.close());
  return locks;
}

/** The server pids holding (namespace, key), from pg_locks. */
async function holderPids(server: pg.Client, ns: string, key: string): Promise<number[]> {
  const { classid, objid } = idHalves(advisoryId(ns, key));
  const { rows } = await server.query<{ pid: number }>(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1::oid AND objid = $2::oid",
    [classid, objid],
  );
  return rows.map((r) => r.pid);
}

/** How many advisory lock requests wait in the server's queue. */
async function queuedCount(server: pg.Client): Promise<number> {
  const { rows } = await server.query(
    "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
  );
  return rows[0].n;
}

/**
 * Records the timers and intervals this package and pg create from now on, with where they were
 * made; `active()` lists those still armed (unref'd ones included, which
 * process.getActiveResourcesInfo() leaves out). Stops recording when the test ends.
 */
function trackTimers(): { active(): string[]; made(where: RegExp): number } {
  const made: { timer: NodeJS.Timeout; stack: string }[] = [];
  // The heartbeat's timers are those of the toolkit's Liveness.
  const ours =
    /packages\/postgres\/src\/|packages\/core\/src\/toolkit\/liveness|node_modules\/pg\//;
  const realTimeout = globalThis.setTimeout;
  const realInterval = globalThis.setInterval;
  const record = <T extends typeof setTimeout | typeof setInterval>(real: T): T =>
    ((...args: Parameters<T>) => {
      const timer = (real as (...a: unknown[]) => NodeJS.Timeout)(...args);
      const stack = new Error().stack ?? "";
      if (ours.test(stack)) made.push({ timer, stack });
      return timer;
    }) as unknown as T;
  globalThis.setTimeout = record(realTimeout);
  globalThis.setInterval = record(realInterval);
  onTestFinished(() => {
    globalThis.setTimeout = realTimeout;
    globalThis.setInterval = realInterval;
  });
  return {
    made: (where) => made.filter(({ stack }) => where.test(stack)).length,
    active: () =>
      made
        .filter(({ timer }) => !(timer as unknown as { _destroyed: boolean })._destroyed)
        .map(({ stack }) => stack),
  };
}

/** How many of each kind of resource keep the event loop alive. */
function resourceCounts(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo())
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return counts;
}

/** A lock client in another OS process, ready; killed when the test ends if still running. */
function contender(ns: string): Promise<LockChild> {
  return LockChild.start({
    backend: {
      module: new URL("../src/index.ts", import.meta.url),
      export: "postgresBackend",
      options: { connectionString: databaseUrl },
    },
    namespace: ns,
  });
}

describe("processes", () => {
  it("4 OS processes contend on one key: no overlap, tokens increase; each exits after close()", async () => {
    const ns = namespace();
    const contenders = await Promise.all([0, 1, 2, 3].map(() => contender(ns)));
    const runs = contenders.map((c) =>
      c.contend("shared-key", { loops: 60, holdMs: [1, 0, 0, 0, 0, 0, 0, 0], timeoutMs: 30_000 }),
    );
    const history = new History();
    for (const holds of await Promise.all(runs)) history.add(...holds);
    expect(history.holds).toHaveLength(240);
    history.assertValid({ fencing: true });
    for (const c of contenders) expect(await c.close()).toBe(0);
  });

  it("pg_terminate_backend of the holder's session: its signal aborts within a second, another process gets the key with a higher token", async () => {
    const ns = namespace();
    const [victim, next] = await Promise.all([contender(ns), contender(ns)]);

    // 1. A lease on the session connection (granted by a first attempt).
    const first = await victim.acquire("k1", { timeoutMs: 30_000 });
    const waiting = next.acquire("k1", { timeoutMs: 30_000 });
    const [pid] = await holderPids(admin, ns, "k1");
    expect(pid).toBeTypeOf("number");
    const terminatedAt = historyNow();
    await admin.query("SELECT pg_terminate_backend($1)", [pid]);
    const lost = await victim.next("lost", 5_000);
    expect(lost.code).toBe("LOCK_LOST");
    expect(lost.at - terminatedAt).toBeLessThan(1_000);
    const second = await waiting;
    expect(BigInt(second.token)).toBeGreaterThan(BigInt(first.token));

    // 2. A lease on a queue connection (granted after waiting in the server's queue).
    const locks = client(ns);
    const blocker = await locks.acquire("k2");
    const queued = victim.acquire("k2", { timeoutMs: 30_000 });
    await waitFor(
      async () => {
        const { rows } = await admin.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        );
        return rows[0].n > 0;
      },
      { message: "the victim waits in the server's queue" },
    );
    await blocker.release();
    const third = await queued;
    const [queuePid] = await holderPids(admin, ns, "k2");
    const terminatedAgain = historyNow();
    await admin.query("SELECT pg_terminate_backend($1)", [queuePid]);
    const lostAgain = await victim.next("lost", 5_000);
    expect(lostAgain.at - terminatedAgain).toBeLessThan(1_000);
    const after = await locks.acquire("k2", { timeoutMs: 5_000 });
    expect(after.fencingToken).toBeGreaterThan(BigInt(third.token));
    await after.release();

    // The victim's client reconnects for later acquires.
    await victim.acquire("k3", { timeoutMs: 30_000 });
    expect(await victim.close()).toBe(0);
    expect(await next.close()).toBe(0);
  });
});

describe("faults", () => {
  it.each([
    ["an immediate restart (crash and recovery)", true],
    ["a fast restart (sessions terminated)", false],
  ])(
    "postgres restarted during a run, %s: every lease lost is signalled, none is reported held that is not",
    async (_label, immediate) => {
      const server = await startPostgres();
      onTestFinished(() => server.stop());
      const ns = namespace();
      const make = (): Locks => {
        const locks = createLocks(postgresBackend({ connectionString: server.connectionString }), {
          namespace: ns,
        });
        onTestFinished(() => locks.close());
        return locks;
      };
      const clients = [make(), make(), make(), make()];
      const history = new History();

      // Long holds: one per client on its session, and one on a queue connection.
      const long: Lease[] = [];
      for (const [i, locks] of clients.entries()) {
        const lease = await locks.acquire(`long-${i}`);
        history.begin(lease, `long-${i}`);
        long.push(lease);
      }
      const blocker = await clients[1]!.acquire("queued");
      const queued = clients[0]!.acquire("queued");
      await new Promise((resolve) => setTimeout(resolve, 50));
      await blocker.release();
      const onQueue = await queued;
      history.begin(onQueue, "queued");
      long.push(onQueue);

      // Workers contend on two keys and retry through the outage.
      let stop = false;
      let grantsAfterRestart = 0;
      let restarted = false;
      const workers = clients.flatMap((locks, c) =>
        [0, 1].map(async (t) => {
          while (!stop) {
            let lease: Lease;
            try {
              lease = await locks.acquire(`work-${t}`, { timeoutMs: 2_000 });
            } catch (error) {
              if (!isLockError(error, "BACKEND_UNAVAILABLE") && !isLockError(error, "LOCK_TIMEOUT"))
                throw error;
              await new Promise((resolve) => setTimeout(resolve, 20));
              continue;
            }
            if (restarted) grantsAfterRestart++;
            const end = history.begin(lease, `client${c}-task${t}`);
            await new Promise((resolve) => setTimeout(resolve, Math.random() * 3));
            end();
            await lease.release().catch(() => undefined);
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 200));

      const killedAt = historyNow();
      await server.restart({ immediate });
      const readyAt = historyNow();
      restarted = true;

      // Every lease held when the server went down was signalled, promptly.
      for (const lease of long) {
        expect(lease.signal.aborted).toBe(true);
        expect((lease.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
      }
      const crossing = history.holds.filter((h) => h.acquiredAt < killedAt);
      for (const hold of crossing) {
        const end = hold.releasedAt ?? hold.lostAt;
        expect(end, `hold of ${hold.owner} ended`).toBeDefined();
        expect(end!).toBeLessThanOrEqual(readyAt);
      }
      for (const lease of long) {
        const lostAt = history.holds.find((h) => h.token === lease.fencingToken.toString())?.lostAt;
        expect(lostAt! - killedAt).toBeLessThan(1_000);
      }

      await waitFor(() => grantsAfterRestart >= 20, {
        timeoutMs: 15_000,
        message: "grants after the restart",
      });
      stop = true;
      await Promise.all(workers);
      history.assertValid({ fencing: true });

      // Each client took fresh leases after the restart; the server agrees they are held.
      const probe = new pg.Client({ connectionString: server.connectionString });
      await probe.connect();
      onTestFinished(() => probe.end());
      for (const [i, locks] of clients.entries()) {
        const lease = await locks.acquire(`long-${i}`, { timeoutMs: 5_000 });
        expect(await holderPids(probe, ns, `long-${i}`)).toHaveLength(1);
        await lease.extend();
        await lease.release();
        expect(await holderPids(probe, ns, `long-${i}`)).toHaveLength(0);
      }
    },
  );

  it("lock_timeout and aborts racing grants: no overlap, and nothing is left behind", async () => {
    const ns = namespace();
    // A 1 ms lock_timeout makes every wait end and re-enter the queue, racing the grants.
    const clients = [0, 1, 2].map(() => client(ns, { lockTimeoutMs: 1 }));
    const history = new History();
    let aborted = 0;
    await Promise.all(
      clients.flatMap((locks, c) =>
        [0, 1].map(async (t) => {
          for (let i = 0; i < 40; i++) {
            const signal =
              i % 3 === 0 ? AbortSignal.timeout(1 + Math.floor(Math.random() * 5)) : undefined;
            let lease: Lease;
            try {
              lease = await locks.acquire("race", {
                timeoutMs: 20_000,
                ...(signal ? { signal } : {}),
                // Labelled grants too: their rows must not be left behind either.
                ...(i % 2 === 0 ? { holder: `client${c}` } : {}),
              });
            } catch (error) {
              if (signal?.aborted !== true) throw error;
              aborted++;
              continue;
            }
            const end = history.begin(lease, `client${c}-task${t}`);
            await new Promise((resolve) => setImmediate(resolve));
            end();
            await lease.release();
          }
        }),
      ),
    );
    expect(aborted).toBeGreaterThan(0);
    history.assertValid({ fencing: true });
    // Nothing left: the key frees (a grant that arrived after its caller gave up is handed back by
    // the core without being awaited, so allow that release a moment), and stays free.
    await waitFor(async () => (await holderPids(admin, ns, "race")).length === 0, {
      timeoutMs: 2_000,
      message: "the key is free",
    });
    // Nor a token marker (a lock the interrupted statement took) or a row.
    const id = advisoryId(ns, "race");
    const { classid, objid } = idHalves(id);
    await waitFor(
      async () => {
        const { rows } = await admin.query(
          `SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2
                     AND classid IN ($1::oid, $2::oid))::int
                + (SELECT count(*) FROM locks_holders WHERE key_id = $3::int8)::int AS n`,
          [classid, objid, id],
        );
        return rows[0].n === 0;
      },
      { timeoutMs: 2_000, message: "no token marker or row of the key is left" },
    );
    const fresh = await client(ns).tryAcquire("race");
    expect(fresh).not.toBeNull();
    await fresh!.release();
  });

  it("with heartbeatMs, a silent partition is signalled as a loss within about two heartbeats", async () => {
    const proxy = await startProxy(databaseUrl);
    onTestFinished(() => proxy.close());
    const ns = namespace();
    const locks = createLocks(
      postgresBackend({ connectionString: proxy.url!, heartbeatMs: 200, connectTimeoutMs: 2_000 }),
      { namespace: ns },
    );
    onTestFinished(() => locks.close());
    const lease = await locks.acquire("p");
    const cut = historyNow();
    proxy.blackhole(true);
    await waitFor(() => lease.signal.aborted, {
      timeoutMs: 5_000,
      message: "the lease is signalled",
    });
    expect(historyNow() - cut).toBeLessThan(1_000);
    expect((lease.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    // The server still holds it for the silent session: the loss was declared first, which is the safe order.
    expect(await holderPids(admin, ns, "p")).toHaveLength(1);
    proxy.blackhole(false);
    // Healed: the close reaches the server, which frees the key; the client reconnects.
    const again = await locks.acquire("p", { timeoutMs: 5_000 });
    expect(again.fencingToken).toBeGreaterThan(lease.fencingToken);
    await again.release();
  });

  it("close() with heartbeatMs: no timer or interval of the backend (or pg) is still armed afterwards", async () => {
    const timers = trackTimers();
    const ns = namespace();
    // Not shorter: a heartbeat unanswered for two intervals on this loaded machine would be a loss.
    const locks = createLocks(
      postgresBackend({ connectionString: databaseUrl, heartbeatMs: 100 }),
      {
        namespace: ns,
      },
    );
    const onSession = await locks.acquire("a");
    const onQueue = locks.acquire("a", { timeoutMs: 10_000 });
    await waitFor(async () => (await holderPids(admin, ns, "a")).length === 1, {
      message: "the first lease is held",
    });
    // Heartbeats run on the lock-holding sessions.
    await waitFor(() => timers.made(/liveness/) >= 3, { message: "heartbeats ran" });
    await onSession.release();
    await onQueue;
    await waitFor(() => timers.made(/liveness/) >= 6, { message: "heartbeats ran again" });
    await locks.close();
    expect(timers.active()).toEqual([]);
  });

  it("connecting through a partition gives up after connectTimeoutMs, and recovers when it heals", async () => {
    const proxy = await startProxy(databaseUrl);
    onTestFinished(() => proxy.close());
    proxy.blackhole(true);
    const ns = namespace();
    const locks = createLocks(
      postgresBackend({ connectionString: proxy.url!, connectTimeoutMs: 500 }),
      {
        namespace: ns,
      },
    );
    onTestFinished(() => locks.close());
    const started = performance.now();
    const error = await locks.tryAcquire("k").catch((e: unknown) => e);
    expect(isLockError(error, "BACKEND_UNAVAILABLE")).toBe(true);
    expect(performance.now() - started).toBeLessThan(3_000);
    proxy.blackhole(false);
    const holder = await client(ns).acquire("k");
    const waiting = locks.acquire("k", { timeoutMs: 5_000 });
    await waitFor(
      async () => {
        const { rows } = await admin.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        );
        return rows[0].n > 0;
      },
      { message: "the wait is queued in the server" },
    );
    await holder.release();
    await (await waiting).release();
  });

  it("close() does not wait for connections the server never answers", async () => {
    const proxy = await startProxy(databaseUrl);
    onTestFinished(() => proxy.close());
    proxy.blackhole(true);
    const locks = createLocks(postgresBackend({ connectionString: proxy.url! }));
    const attempt = locks.tryAcquire("k").catch((e: unknown) => e);
    const started = performance.now();
    await locks.close();
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(isLockError(await attempt)).toBe(true);
  });

  it("postgres SIGSTOPped: close() resolves well under a second, in-flight acquires reject with LOCK_CLOSED at once, no socket or timer is left", async () => {
    const server = await startPostgres();
    onTestFinished(() => server.stop());
    const probe = new pg.Client({ connectionString: server.connectionString });
    probe.on("error", () => undefined);
    await probe.connect();
    onTestFinished(async () => {
      server.resume();
      await probe.end();
    });
    const sockets = resourceCounts().get("TCPSocketWrap") ?? 0;
    const timers = trackTimers();
    const locks = createLocks(postgresBackend({ connectionString: server.connectionString }));
    // Something in every state: leases, a wait queued in the server, a wait that polls.
    await locks.acquire("busy");
    const slots = [
      await locks.acquire("full", { limit: 2 }),
      await locks.acquire("full", { limit: 2 }),
    ];
    expect(slots).toHaveLength(2);
    const queuedWait = locks.acquire("busy").catch((e: unknown) => e);
    const polledWait = locks.acquire("full", { limit: 2 }).catch((e: unknown) => e);
    await waitFor(
      async () => {
        const { rows } = await probe.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        );
        return rows[0].n > 0;
      },
      { message: "the wait is queued in the server" },
    );

    server.pause();
    const inFlight = locks.acquire("free").catch((e: unknown) => e);
    // The attempt is on the wire, unanswered.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = performance.now();
    const closing = locks.close();
    const rejections = await Promise.all(
      [inFlight, queuedWait, polledWait].map((p) => p.then((e) => ({ e, at: performance.now() }))),
    );
    await closing;
    const closedIn = performance.now() - started;
    for (const { e, at } of rejections) {
      expect(isLockError(e, "LOCK_CLOSED"), String(e)).toBe(true);
      expect(at - started).toBeLessThan(100);
    }
    expect(closedIn).toBeLessThan(800);
    expect(timers.active()).toEqual([]);
    await waitFor(() => (resourceCounts().get("TCPSocketWrap") ?? 0) <= sockets, {
      timeoutMs: 1_000,
      message: "every socket of the backend is closed",
    });
  });

  it("an unreachable server is BACKEND_UNAVAILABLE, fast", async () => {
    const port = await freePort();
    const locks = createLocks(
      postgresBackend({ connectionString: `postgresql://postgres@127.0.0.1:${port}/postgres` }),
    );
    onTestFinished(() => locks.close());
    const started = performance.now();
    const error = await locks.tryAcquire("k").catch((e: unknown) => e);
    expect(isLockError(error, "BACKEND_UNAVAILABLE")).toBe(true);
    expect(performance.now() - started).toBeLessThan(2_000);
    await expect(locks.acquire("k", { timeoutMs: 1_000 })).rejects.toMatchObject({
      code: "BACKEND_UNAVAILABLE",
    });
  });
});

describe("connections", () => {
  it("one session connection, plus one per concurrent wait, at most maxConnections", async () => {
    const ns = namespace();
    const app = `locks-test-${randomBytes(4).toString("hex")}`;
    const holder = client(ns);
    const waiter = client(ns, { maxConnections: 3, clientConfig: { application_name: app } });
    const count = async (): Promise<number> => {
      const { rows } = await admin.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1",
        [app],
      );
      return rows[0].n;
    };
    const held = await Promise.all([0, 1, 2, 3].map((i) => holder.acquire(`c${i}`)));
    expect(await waiter.tryAcquire("c0")).toBeNull();
    // At rest: the session, and a spare queue connection.
    await waitFor(async () => (await count()) === 2, { message: "session and spare" });
    // Four waits: two queue in the server (3 connections in all), two poll.
    const waits = [0, 1, 2, 3].map((i) => waiter.acquire(`c${i}`, { timeoutMs: 10_000 }));
    await waitFor(async () => (await count()) === 3, { message: "two queue connections" });
    await Promise.all(held.map((lease) => lease.release()));
    const leases = await Promise.all(waits);
    expect(await count()).toBeLessThanOrEqual(3);
    await Promise.all(leases.map((lease) => lease.release()));
    await waiter.close();
    await waitFor(async () => (await count()) === 0, { message: "all connections closed" });
  });

  it("a given client holds the locks, is never closed, and its loss is signalled", async () => {
    const ns = namespace();
    const given = new pg.Client({ connectionString: databaseUrl });
    given.on("error", () => undefined);
    await given.connect();
    onTestFinished(() => given.end().catch(() => undefined));
    const other = client(ns);

    const locks = createLocks(postgresBackend({ client: given }), { namespace: ns });
    expect(locks.backend.capabilities.fair).toBe(false);
    const lease = await locks.acquire("g");
    expect(await other.tryAcquire("g")).toBeNull();
    const waiting = locks.acquire("g2", { timeoutMs: 5_000 });
    const blocker = await other.acquire("g3");
    const third = locks.acquire("g3", { timeoutMs: 5_000 });
    await new Promise((resolve) => setTimeout(resolve, 30));
    await blocker.release();
    const viaPolling = await third;
    await (await waiting).release();
    await viaPolling.release();
    await locks.close();
    // close() released what it held on the client, and left the client open.
    expect(lease.signal.aborted).toBe(true);
    expect((await given.query("SELECT 1 AS one")).rows[0].one).toBe(1);
    const freed = await other.tryAcquire("g");
    expect(freed).not.toBeNull();
    await freed!.release();

    // The client's session dies: its leases are lost, later calls fail.
    const again = createLocks(postgresBackend({ client: given }), { namespace: ns });
    onTestFinished(() => again.close());
    const held = await again.acquire("g");
    const { rows } = await given.query("SELECT pg_backend_pid() AS pid");
    await admin.query("SELECT pg_terminate_backend($1)", [rows[0].pid]);
    await waitFor(() => held.signal.aborted, { message: "the lease is signalled" });
    expect((held.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    await expect(again.tryAcquire("g")).rejects.toMatchObject({ code: "BACKEND_UNAVAILABLE" });
  });

  it("inspect reports every holder with its mode, token and label, and the key's limit (semaphores included)", async () => {
    const ns = namespace();
    const [a, b, c] = [client(ns), client(ns), client(ns)];
    /** [label, mode, token] of each holder, as another client (c) sees them. */
    const seen = async (key: string) =>
      (await c.inspect(key)).holders.map((h) => [h.holder, h.mode, h.fencingToken]);
    expect(await c.inspect("seen")).toEqual({ key: "seen", holders: [], limit: undefined });
    // Two readers on one session of a, one on b's: three holders, each with its own token.
    const r1 = await a.acquire("seen", { mode: "shared", holder: "r1" });
    const r2 = await b.acquire("seen", { mode: "shared" });
    const r3 = await a.acquire("seen", { mode: "shared", holder: "r3" });
    expect(new Set(await holderPids(admin, ns, "seen")).size).toBe(2);
    expect(await seen("seen")).toEqual([
      ["r1", "shared", r1.fencingToken],
      [undefined, "shared", r2.fencingToken],
      ["r3", "shared", r3.fencingToken],
    ]);
    expect((await c.inspect("seen")).limit, "only a semaphore has one").toBeUndefined();
    await r1.release();
    expect(await seen("seen")).toEqual([
      [undefined, "shared", r2.fencingToken],
      ["r3", "shared", r3.fencingToken],
    ]);
    await Promise.all([r2.release(), r3.release()]);
    // A writer granted after waiting in the server's queue (on a queue connection).
    const blocker = await a.acquire("seen");
    const waiting = b.acquire("seen", { holder: "queued", timeoutMs: 10_000 });
    await waitFor(async () => (await queuedCount(admin)) > 0, { message: "b waits in the queue" });
    await blocker.release();
    const w = await waiting;
    expect(await c.inspect("seen")).toEqual({
      key: "seen",
      holders: [
        { holder: "queued", mode: "exclusive", fencingToken: w.fencingToken, expiresAt: undefined },
      ],
    });
    await w.release();
    expect(await seen("seen")).toEqual([]);

    const s1 = await a.acquire("pool", { limit: 2, holder: "slot 'one'\u0000\n🔒" });
    const s2 = await b.acquire("pool", { limit: 2 });
    expect(await c.inspect("pool")).toMatchObject({ limit: 2 });
    expect(await seen("pool")).toEqual([
      ["slot 'one'\u0000\n🔒", "exclusive", s1.fencingToken],
      [undefined, "exclusive", s2.fencingToken],
    ]);
    await s1.release();
    expect(await seen("pool")).toEqual([[undefined, "exclusive", s2.fencingToken]]);
    await s2.release();
    expect(await c.inspect("pool")).toEqual({ key: "pool", holders: [], limit: undefined });
    // A large semaphore is reported too.
    const big = await a.acquire("big", { limit: 1_000, holder: "big" });
    expect(await c.inspect("big")).toMatchObject({ limit: 1_000, holders: [{ holder: "big" }] });
    await big.release();
    // Nothing of theirs is left in the server: no advisory lock, no row.
    expect(await holderPids(admin, ns, "seen")).toHaveLength(0);
    const ids = ["seen", "pool", "big"].map((key) => advisoryId(ns, key));
    const left = await admin.query(
      "SELECT count(*)::int AS n FROM locks_holders WHERE key_id = ANY($1::int8[])",
      [ids],
    );
    expect(left.rows[0].n).toBe(0);
  });

  it("a labelled holder whose session died is not reported; its row goes at the next connection's setup", async () => {
    const ns = namespace();
    const [a, b] = [client(ns), client(ns)];
    const held = await a.acquire("gone", { holder: "crashed" });
    const [pid] = await holderPids(admin, ns, "gone");
    await admin.query("SELECT pg_terminate_backend($1, 5000)", [pid]);
    await waitFor(() => held.signal.aborted, { message: "the lease is signalled lost" });
    expect((await b.inspect("gone")).holders).toEqual([]);
    // A new holder of the key is reported with its own label.
    const next = await b.acquire("gone", { holder: "next" });
    expect((await b.inspect("gone")).holders.map((h) => h.holder)).toEqual(["next"]);
    // Any client's new connection deletes the rows of sessions that ended (a's reconnect, here).
    expect((await a.inspect("gone")).holders.map((h) => h.holder)).toEqual(["next"]);
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM locks_holders WHERE pid = $1",
      [pid],
    );
    expect(rows[0].n).toBe(0);
    await next.release();
  });

  it("a limit other than the one the key's holders use is refused with INVALID_ARGUMENT, waiting ones too", async () => {
    const ns = namespace();
    const [a, b] = [client(ns), client(ns)];
    const refusal = async (outcome: Promise<unknown>): Promise<string> => {
      const error = await outcome.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isLockError(error, "INVALID_ARGUMENT"), String(error)).toBe(true);
      return (error as Error).message;
    };
    // Two holders with limit 2 (one per client).
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    expect(await refusal(b.tryAcquire("pool", { limit: 3 }))).toMatch(
      /limit 3 differs from the limit 2/,
    );
    expect(await refusal(a.tryAcquire("pool", { limit: 3 }))).toMatch(/3 .*2/);
    await refusal(b.acquire("pool", { limit: 3, timeoutMs: 5_000 }));
    // Limit 1 (the default), exclusive or shared, from any client: refused, not queued behind them.
    const c = client(ns);
    expect(await refusal(c.tryAcquire("pool"))).toMatch(/limit 1 differs from the limit 2/);
    await refusal(c.tryAcquire("pool", { mode: "shared" }));
    await refusal(c.acquire("pool", { timeoutMs: 5_000 }));
    expect(await refusal(b.tryAcquire("pool"))).toMatch(/limit 1 differs from the limit 2/);
    await refusal(a.tryAcquire("pool"));
    await refusal(a.tryAcquire("pool", { mode: "shared" }));
    await refusal(b.acquire("pool", { timeoutMs: 5_000 }));
    // The same limit waits as usual.
    const third = b.acquire("pool", { limit: 2, timeoutMs: 5_000 });
    await slots[0]!.release();
    await (await third).release();
    await slots[1]!.release();

    // Held with limit 1: a semaphore request is refused, from another client or the same one.
    const single = await a.acquire("pool");
    expect(await refusal(b.tryAcquire("pool", { limit: 2 }))).toMatch(
      /limit 2 differs from the limit 1/,
    );
    await refusal(a.tryAcquire("pool", { limit: 2 }));
    await refusal(b.acquire("pool", { limit: 2, timeoutMs: 5_000 }));
    await single.release();
    const readers = await b.acquire("pool", { mode: "shared" });
    await refusal(a.tryAcquire("pool", { limit: 2 }));
    await readers.release();

    // The only holder is this client's own session, which never conflicts with itself in the server.
    const alone = await a.acquire("pool", { limit: 2 });
    await refusal(a.tryAcquire("pool"));
    await refusal(a.tryAcquire("pool", { mode: "shared" }));
    await refusal(a.acquire("pool", { timeoutMs: 5_000 }));
    await refusal(a.tryAcquire("pool", { limit: 3 }));
    await alone.release();

    // Once the holders are gone, any limit goes, and the key is free afterwards.
    const three = await b.tryAcquire("pool", { limit: 3 });
    expect(three).not.toBeNull();
    await three!.release();
    expect(await a.inspect("pool")).toEqual({ key: "pool", holders: [], limit: undefined });
    expect(await holderPids(admin, ns, "pool")).toHaveLength(0);
  });

  it("clients racing with different limits on one key: holders of two limits never overlap", async () => {
    const ns = namespace();
    const clients = [client(ns), client(ns), client(ns), client(ns)];
    const holds: { limit: number; from: number; to: number }[] = [];
    let refused = 0;
    await Promise.all(
      clients.flatMap((locks) =>
        [0, 1].map(async () => {
          for (let i = 0; i < 40; i++) {
            const limit = 1 + Math.floor(Math.random() * 3);
            const mode = limit === 1 && Math.random() < 0.5 ? "shared" : "exclusive";
            let lease: Lease | null;
            try {
              lease = await locks.tryAcquire("mix", { limit, mode });
            } catch (error) {
              if (!isLockError(error, "INVALID_ARGUMENT")) throw error;
              refused++;
              continue;
            }
            if (lease === null) continue;
            const from = performance.now();
            await new Promise((resolve) => setImmediate(resolve));
            holds.push({ limit, from, to: performance.now() });
            await lease.release();
          }
        }),
      ),
    );
    expect(refused).toBeGreaterThan(0);
    expect(new Set(holds.map((h) => h.limit)).size).toBe(3);
    for (const h of holds) {
      const overlapping = holds.filter((o) => o !== h && o.from < h.to && h.from < o.to);
      expect(overlapping.filter((o) => o.limit !== h.limit)).toEqual([]);
      // Held at once when h began (the most holders at once are reached when one begins).
      const together = holds.filter((o) => o.from <= h.from && h.from < o.to);
      if (h.limit > 1) expect(together.length).toBeLessThanOrEqual(h.limit);
    }
  });

  it("creates the fencing sequence it is told to use", async () => {
    const name = `fence_${randomBytes(4).toString("hex")}`;
    const locks = client(namespace(), { fencingSequence: name });
    const a = await locks.acquire("k");
    await a.release();
    const b = await locks.acquire("k");
    await b.release();
    expect(b.fencingToken).toBe(a.fencingToken + 1n);
    const { rows } = await admin.query(`SELECT last_value FROM "${name}"`);
    expect(BigInt(rows[0].last_value)).toBe(b.fencingToken);
    await admin.query(`DROP SEQUENCE "${name}"`);
  });
});

describe("shared mode", () => {
  /** Whether anybody waits for (ns, key) in the server's lock queue. */
  async function queued(ns: string, key: string): Promise<boolean> {
    const { classid, objid } = idHalves(advisoryId(ns, key));
    const { rows } = await admin.query(
      "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1 AND classid = $1::oid AND objid = $2::oid",
      [classid, objid],
    );
    return rows[0].n > 0;
  }

  it("any number of readers per client: 20 concurrent shared acquires of one key are all granted, on one connection", async () => {
    const ns = namespace();
    const readers = client(ns);
    const leases = await Promise.all(
      Array.from({ length: 20 }, () =>
        readers.acquire("doc", { mode: "shared", timeoutMs: 5_000 }),
      ),
    );
    expect(leases.every((lease) => lease.mode === "shared")).toBe(true);
    // One session holds them all (PostgreSQL counts a session's repeated shared lock).
    expect(new Set(await holderPids(admin, ns, "doc")).size).toBe(1);
    // Writers stay out: another client's, and this client's own.
    expect(await client(ns).tryAcquire("doc")).toBeNull();
    expect(await readers.tryAcquire("doc")).toBeNull();
    await Promise.all(leases.slice(1).map((lease) => lease.release()));
    expect(await client(ns).tryAcquire("doc")).toBeNull();
    await leases[0]!.release();
    const writer = await client(ns).tryAcquire("doc");
    expect(writer).not.toBeNull();
    await writer!.release();
  });

  it("two shared tryAcquires of one key from one client both succeed", async () => {
    const ns = namespace();
    const locks = client(ns);
    const first = await locks.tryAcquire("k", { mode: "shared" });
    const second = await locks.tryAcquire("k", { mode: "shared" });
    expect(first).not.toBeNull();
    expect(second).not.toBeNull();
    // No connection of its own for the second reader: there are not many to spare (maxConnections).
    expect(new Set(await holderPids(admin, ns, "k")).size).toBe(1);
    const more = [];
    for (let i = 0; i < 15; i++) more.push(await locks.tryAcquire("k", { mode: "shared" }));
    expect(more.every((lease) => lease !== null)).toBe(true);
    await Promise.all(more.map((lease) => lease!.release()));
    await first!.release();
    // Still read-locked by the second: the count went down by one, not to zero.
    expect(await client(ns).tryAcquire("k")).toBeNull();
    await second!.release();
    expect(await holderPids(admin, ns, "k")).toHaveLength(0);
  });

  it.each([
    ["another client", false],
    ["the same client", true],
  ])(
    "a writer of %s waiting in the queue: no new reader of the reading client jumps it",
    async (_label, same) => {
      const ns = namespace();
      const readers = client(ns);
      const first = await readers.acquire("q", { mode: "shared" });
      const writing = (same ? readers : client(ns)).acquire("q", { timeoutMs: 10_000 });
      await waitFor(() => queued(ns, "q"), { message: "the writer waits in the server's queue" });
      // The server would grant the reading session at once: the backend must not ask it.
      expect(await readers.tryAcquire("q", { mode: "shared" })).toBeNull();
      const later = readers.acquire("q", { mode: "shared", timeoutMs: 10_000 });
      await first.release();
      const writer = await writing;
      // The later reader waits for the writer (the server holds it back: only the writer holds the key).
      expect(await holderPids(admin, ns, "q")).toHaveLength(1);
      await writer.release();
      await (await later).release();
    },
  );
});

describe("forceRelease", () => {
  it("ends the holder's session: the key is free, its leases on that connection are all lost at once, a waiter is granted with a higher token, and the evicted client acquires again", async () => {
    const ns = namespace();
    const [a, b, c] = [client(ns), client(ns), client(ns)];
    const evicted = await a.acquire("k", { holder: "old" });
    const bystander = await a.acquire("other");
    // A lease on one of a's queue connections: another session, which forceRelease("k") leaves alone.
    const blocker = await c.acquire("queued");
    const queuedLease = a.acquire("queued", { timeoutMs: 10_000 });
    await waitFor(async () => (await queuedCount(admin)) > 0, { message: "a waits in the queue" });
    await blocker.release();
    const kept = await queuedLease;
    const waiting = b.acquire("k", { holder: "new", timeoutMs: 10_000 });
    await waitFor(async () => (await queuedCount(admin)) > 0, { message: "b waits in the queue" });

    expect(await c.forceRelease("k")).toBe(true);
    const granted = await waiting;
    expect(granted.fencingToken).toBeGreaterThan(evicted.fencingToken);
    expect((await c.inspect("k")).holders.map((h) => h.holder)).toEqual(["new"]);
    // The evicted session's leases learn it from their connection, without any call of theirs.
    await waitFor(() => evicted.signal.aborted && bystander.signal.aborted, {
      message: "the evicted session's leases are signalled",
    });
    expect((evicted.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    expect((bystander.signal.reason as { code?: string }).code).toBe("LOCK_LOST");
    expect(kept.signal.aborted).toBe(false);
    expect(await c.tryAcquire("other")).not.toBeNull();
    // Its release is a no-op: it never frees the new holder's lock.
    await evicted.release();
    expect(await c.tryAcquire("k")).toBeNull();
    await granted.release();
    // The evicted client reconnects for what comes next.
    const again = await a.acquire("k", { timeoutMs: 10_000 });
    expect(again.fencingToken).toBeGreaterThan(granted.fencingToken);
    await Promise.all([again.release(), kept.release()]);
    expect(await c.forceRelease("k")).toBe(false);
    expect(await c.forceRelease("never-held")).toBe(false);
  });

  it("evicts every semaphore holder; a client's own holds are released without ending its session", async () => {
    const ns = namespace();
    const [a, b, c] = [client(ns), client(ns), client(ns)];
    const slots = [await a.acquire("pool", { limit: 2 }), await b.acquire("pool", { limit: 2 })];
    const before = (await c.inspect("pool")).holders.length;
    expect(await c.forceRelease("pool")).toBe(true);
    expect(before).toBe(2);
    expect((await c.inspect("pool")).holders).toEqual([]);
    await waitFor(() => slots.every((slot) => slot.signal.aborted), { message: "both are lost" });
    const mine = [
      await c.tryAcquire("pool", { limit: 2 }),
      await c.tryAcquire("pool", { limit: 2 }),
    ];
    expect(mine.every((lease) => lease !== null)).toBe(true);
    // c's own slots: released by c, on a session that lives on (its other lease is kept).
    const other = await c.acquire("other");
    const session = await holderPids(admin, ns, "other");
    expect(await c.forceRelease("pool")).toBe(true);
    expect(mine.every((lease) => lease!.signal.aborted)).toBe(true);
    expect((await c.inspect("pool")).holders).toEqual([]);
    expect(other.signal.aborted).toBe(false);
    expect(await holderPids(admin, ns, "other")).toEqual(session);
    await other.release();
  });

  it("a labelled attempt whose row the server refuses (after taking the lock) leaves no lock behind", async () => {
    const ns = namespace();
    const locks = client(ns);
    await locks.inspect("k"); // connected: the sequence and the table exist
    /** Advisory locks held by sessions other than admin's. */
    const othersLocks = async (): Promise<number> => {
      const { rows } = await admin.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()",
      );
      return rows[0].n;
    };
    for (const options of [{}, { limit: 2 }]) {
      // A row that squats the next token: the grant's INSERT fails after its lock was taken.
      const { rows } = await admin.query("SELECT nextval('locks_fencing') + 1 AS next");
      await admin.query(
        "INSERT INTO locks_holders (token, pid, key_id, holder) VALUES ($1, pg_backend_pid(), 0, 'squatter')",
        [rows[0].next],
      );
      const error = await locks.tryAcquire("k", { holder: "refused", ...options }).then(
        () => undefined,
        (e: unknown) => e as { code?: string; cause?: { code?: string } },
      );
      await admin.query("DELETE FROM locks_holders WHERE holder = 'squatter'");
      expect(error?.code).toBe("BACKEND_UNAVAILABLE");
      expect(error?.cause?.code).toBe("23505");
      await waitFor(async () => (await othersLocks()) === 0, {
        message: "the locks taken before the error are gone with their session",
      });
    }
    // The client goes on, on a new session.
    const lease = await locks.tryAcquire("k", { holder: "next" });
    expect(lease).not.toBeNull();
    await lease!.release();
  });

  it("without the privilege to end the holder's session: BACKEND_UNAVAILABLE that says what it takes", async () => {
    const ns = namespace();
    const holder = client(ns);
    const held = await holder.acquire("k");
    const role = `weak_${randomBytes(4).toString("hex")}`;
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    await admin.query(`GRANT USAGE ON SEQUENCE locks_fencing TO ${role}`);
    await admin.query(`GRANT SELECT, INSERT, DELETE ON locks_holders TO ${role}`);
    onTestFinished(async () => {
      await admin.query(`DROP OWNED BY ${role}`);
      await admin.query(`DROP ROLE ${role}`);
    });
    const url = new URL(databaseUrl);
    url.username = role;
    const weak = createLocks(postgresBackend({ connectionString: url.href }), { namespace: ns });
    const error = await weak.forceRelease("k").then(
      () => undefined,
      (e: unknown) =>
        e as { code?: string; message?: string; cause?: { cause?: { code?: string } } },
    );
    await weak.close();
    expect(error?.code).toBe("BACKEND_UNAVAILABLE");
    expect(error?.message).toMatch(/pg_signal_backend/);
    expect(held.signal.aborted).toBe(false);
    await held.release();
  });
});

describe("options and keys", () => {
  it("refuses bad options synchronously with INVALID_ARGUMENT", () => {
    const bad: unknown[] = [
      {},
      { connectionString: "" },
      { connectionString: databaseUrl, unknown: 1 },
      { connectionString: databaseUrl, client: new pg.Client() },
      { client: new pg.Pool() },
      { connectionString: databaseUrl, fencingSequence: 'x"; DROP TABLE t; --' },
      { connectionString: databaseUrl, fencingSequence: "a.b.c" },
      { connectionString: databaseUrl, notifyChannel: "has space" },
      { connectionString: databaseUrl, maxConnections: 0 },
      { connectionString: databaseUrl, lockTimeoutMs: 1.5 },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        postgresBackend(options as Parameters<typeof postgresBackend>[0]);
      } catch (e) {
        error = e;
      }
      expect(
        isLockError(error, "INVALID_ARGUMENT"),
        JSON.stringify(Object.keys(options as object)),
      ).toBe(true);
    }
  });

  it("ttlMs at the core's floor (10 ms) works like any other (nothing here derives a timeout from it); below it, INVALID_ARGUMENT", async () => {
    const ns = namespace();
    const other = client(ns);
    const tiny = createLocks(postgresBackend({ connectionString: databaseUrl }), {
      namespace: ns,
      ttlMs: 10,
    });
    onTestFinished(() => tiny.close());
    expect(tiny.backend.capabilities.minTtlMs ?? 0).toBeLessThanOrEqual(10);
    const lease = await tiny.acquire("t");
    const tried = await tiny.tryAcquire("u", { ttlMs: 10 });
    expect(tried).not.toBeNull();
    const blocker = await other.acquire("w");
    const waiting = tiny.acquire("w", { ttlMs: 10, timeoutMs: 5_000 });
    await blocker.release();
    const waited = await waiting;
    // Time passes well beyond the TTL: the leases hold (the session does).
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (const held of [lease, tried!, waited]) expect(held.signal.aborted).toBe(false);
    expect(await other.tryAcquire("t")).toBeNull();
    await lease.extend(10);
    await Promise.all([lease.release(), tried!.release(), waited.release()]);
    await expect(tiny.acquire("x", { ttlMs: 9 })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
  });

  it("maps a key to the first 8 bytes of SHA-256(namespace + key), as a signed bigint; slots and markers apart", () => {
    const request = createRequest({ key: "k", namespace: "ns" });
    const ids = idsOf(request);
    expect(ids.key).toBe(keyDigest("ns", "k").readBigInt64BE(0).toString());
    expect(advisoryId("ns", "k")).toBe(ids.key);
    const slots = slotIds(request.scoped, [0, 1, 2]);
    expect(new Set([ids.key, ids.interest, ids.presence, ...slots]).size).toBe(6);
    // Deterministic: the same everywhere (no per-process seed).
    expect(idsOf(createRequest({ key: "k", namespace: "ns" })).key).toBe(ids.key);
    // The halves pg_locks shows.
    const { classid, objid } = idHalves("-1");
    expect([classid, objid]).toEqual(["4294967295", "4294967295"]);
  });
});
