import { execFile } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PgServerError, type PostgresServer, pgQuery, startPostgres } from "../src/index.js";

const run = promisify(execFile);
const PSQL = "/usr/lib/postgresql/15/bin/psql";

describe("startPostgres", () => {
  let pg: PostgresServer;
  beforeAll(async () => {
    pg = await startPostgres();
  });
  afterAll(() => pg.stop());

  it("answers on 127.0.0.1 with the documented settings", async () => {
    expect(pg.connectionString).toBe(`postgresql://postgres@127.0.0.1:${pg.port}/postgres`);
    const rows = await pgQuery(
      pg.connectionString,
      "SELECT current_user, current_database(), current_setting('listen_addresses'), " +
        "current_setting('max_connections'), current_setting('fsync')",
    );
    expect(rows).toEqual([["postgres", "postgres", "127.0.0.1", "200", "off"]]);
    if (process.getuid?.() === 0) expect(statSync(`${pg.dir}/data`).uid).not.toBe(0);
  });

  it.skipIf(!existsSync(PSQL))(
    "works with libpq (psql) through the connection string",
    async () => {
      const { stdout } = await run(PSQL, [pg.connectionString, "-Atc", "SELECT 40 + 2"]);
      expect(stdout.trim()).toBe("42");
    },
  );

  it("reports SQL errors with their SQLSTATE", async () => {
    const error = await pgQuery(pg.connectionString, "SELECT * FROM missing_table").catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PgServerError);
    expect((error as PgServerError).code).toBe("42P01");
  });

  it("pause() makes queries time out until resume()", async () => {
    pg.pause();
    try {
      await expect(pgQuery(pg.connectionString, "SELECT 1", { timeoutMs: 300 })).rejects.toThrow(
        /no reply within 300 ms/,
      );
    } finally {
      pg.resume();
    }
    expect(await pgQuery(pg.connectionString, "SELECT 1")).toEqual([["1"]]);
  });

  it("restart({ immediate: true }) recovers committed data on the same port", async () => {
    await pgQuery(pg.connectionString, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)");
    const { pid, port } = pg;
    await pg.restart({ immediate: true });
    expect(pg.port).toBe(port);
    expect(pg.pid).not.toBe(pid);
    expect(await pgQuery(pg.connectionString, "SELECT v FROM t")).toEqual([["7"]]);
  });

  it("kill() takes the backends down too; restart() comes back", async () => {
    const pid = pg.pid;
    await pg.kill();
    expect(() => process.kill(pid, 0)).toThrow();
    await expect(pgQuery(pg.connectionString, "SELECT 1", { timeoutMs: 500 })).rejects.toThrow();
    await pg.restart();
    expect(await pgQuery(pg.connectionString, "SELECT count(*) FROM t")).toEqual([["1"]]);
  });
});

describe("startPostgres, second server", () => {
  it("starts from the template quickly and stop() removes everything", async () => {
    const pg = await startPostgres({ settings: { work_mem: "8MB" } });
    expect(await pgQuery(pg.connectionString, "SHOW work_mem")).toEqual([["8MB"]]);
    await pg.stop();
    await pg.stop();
    expect(existsSync(pg.dir)).toBe(false);
  });
});
