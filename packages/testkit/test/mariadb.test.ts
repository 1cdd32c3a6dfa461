import { execFile } from "node:child_process";
import { statSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type MariadbServer, startMariadb } from "../src/index.js";

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
