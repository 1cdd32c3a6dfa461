import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MariadbServer, startMariadb, trackedCounts } from "../src/index.js";
import setupMariadb from "../src/setup/mariadb.js";

const run = promisify(execFile);

function sql(server: MariadbServer, query: string, user = "locks"): Promise<string> {
  const args = ["-h127.0.0.1", `-P${server.port}`, `-u${user}`, "-plocks", "-N", "-B", "-e", query];
  return run("mariadb", args, { timeout: 5_000 }).then(({ stdout }) => stdout.trim());
}

describe("startMariadb", () => {
  let db: MariadbServer;
  beforeAll(async () => {
    db = await startMariadb();
  }, 30_000);
  afterAll(() => db.stop());

  it("answers on 127.0.0.1 as the locks user, not on 3306", async () => {
    expect(db.port).not.toBe(3306);
    expect(db.url).toBe(`mysql://locks:locks@127.0.0.1:${db.port}/locks`);
    expect(await sql(db, "SELECT CURRENT_USER(), DATABASE(), @@bind_address")).toBe(
      "locks@%\tNULL\t127.0.0.1",
    );
    if (process.getuid?.() === 0) expect(statSync(`${db.dir}/data`).uid).not.toBe(0);
  });

  it("has a limited user that cannot create tables", async () => {
    await expect(sql(db, "CREATE TABLE locks.t (v int)", "locks_limited")).rejects.toThrow(
      /denied/,
    );
  });

  it("pause() stops answers until resume(); restart() keeps data", async () => {
    db.pause();
    await expect(sql(db, "SELECT 1").then(() => "answered")).rejects.toThrow();
    db.resume();
    await sql(db, "CREATE TABLE locks.k (v int); INSERT INTO locks.k VALUES (7)");
    await db.restart();
    expect(await sql(db, "SELECT v FROM locks.k")).toBe("7");
  }, 30_000);
});

describe("setup/mariadb", () => {
  const saved = process.env.MYSQL_URL;
  afterAll(() => {
    if (saved === undefined) delete process.env.MYSQL_URL;
    else process.env.MYSQL_URL = saved;
  });

  function project() {
    const provided = new Map<string, unknown>();
    const provide = ((key: string, value: unknown) => {
      provided.set(key, value);
    }) as never;
    return { provided, provide };
  }

  it("uses MYSQL_URL when set, starting nothing; otherwise starts one and stops it in teardown", async () => {
    process.env.MYSQL_URL = "mysql://u@127.0.0.1:4/db";
    const before = trackedCounts();
    const given = project();
    await (await setupMariadb(given))();
    expect(trackedCounts()).toEqual(before);
    expect(given.provided.get("mysqlUrl")).toBe("mysql://u@127.0.0.1:4/db");

    delete process.env.MYSQL_URL;
    const started = project();
    const teardown = await setupMariadb(started);
    const url = new URL(started.provided.get("mysqlUrl") as string);
    const args = ["-h127.0.0.1", `-P${url.port}`, "-ulocks", "-plocks", "-N", "-e", "SELECT 1"];
    expect((await run("mariadb", args, { timeout: 5_000 })).stdout.trim()).toBe("1");
    await teardown();
    await expect(run("mariadb", args, { timeout: 5_000 })).rejects.toThrow();
  }, 30_000);
});
