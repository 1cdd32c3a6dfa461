import { execFile } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  countRequests,
  countRequestsByMethod,
  countStatements,
  type EtcdServer,
  httpRequest,
  type MariadbServer,
  monitorRedis,
  type PostgresServer,
  pgQuery,
  type RedisServer,
  redisCommand,
  startEtcd,
  startMariadb,
  startPostgres,
  startRedis,
  waitFor,
} from "../src/index.js";

// Each count rises by exactly the requests made between two readings: the
// probes' own requests are not counted (a reading twice in a row differs by 0).

describe("countRequests: redis", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());

  it("rises by one per command, not by its own INFO", async () => {
    const first = await countRequests(redis);
    expect(await countRequests(redis)).toBe(first);
    for (let i = 0; i < 5; i++) await redisCommand(redis.url, ["PING"]);
    expect(await countRequests(redis)).toBe(first + 5);
  });

  it("counts a script's commands too; monitorRedis counts what clients sent", async () => {
    const monitor = await monitorRedis(redis);
    try {
      const first = await countRequests(redis);
      const script = "redis.call('SET', KEYS[1], '1'); return redis.call('GET', KEYS[1])";
      await redisCommand(redis.url, ["EVAL", script, "1", "counted"]);
      expect(await countRequests(redis)).toBe(first + 3);
      // The two INFO probes and the EVAL; the script's SET and GET apart.
      await waitFor(() => monitor.requests === 3 && monitor.scripted === 2);
    } finally {
      monitor.close();
    }
  });
});

describe("countRequests: etcd", () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(() => etcd.stop());

  it("rises by one per gRPC request (here through the JSON gateway), by method", async () => {
    const first = await countRequests(etcd);
    expect(await countRequests(etcd)).toBe(first);
    const puts = (await countRequestsByMethod(etcd)).Put ?? 0;
    for (let i = 0; i < 3; i++) {
      const response = await httpRequest(`${etcd.endpoint}/v3/kv/put`, {
        body: { key: Buffer.from(`k${i}`).toString("base64"), value: "" },
      });
      expect(response.status).toBe(200);
    }
    expect(await countRequests(etcd)).toBe(first + 3);
    expect((await countRequestsByMethod(etcd)).Put).toBe(puts + 3);
  });
});

describe("countRequests: postgres", () => {
  let postgres: PostgresServer;
  beforeAll(async () => {
    postgres = await startPostgres();
  });
  afterAll(() => postgres.stop());

  it("rises by one per transaction once the connection published its counts", async () => {
    const first = await countRequests(postgres);
    expect(await countRequests(postgres)).toBe(first);
    await pgQuery(
      postgres.connectionString,
      "BEGIN; SELECT 1; COMMIT; BEGIN; SELECT 2; COMMIT; BEGIN; SELECT 3; ROLLBACK",
    );
    // 3 transactions and the connection's start-up, published as it closes,
    // just after the client left.
    await waitFor(async () => (await countRequests(postgres)) >= first + 4, { timeoutMs: 20_000 });
    expect(await countRequests(postgres)).toBe(first + 4);
  });
});

describe("countStatements: postgres with pg_stat_statements", () => {
  let postgres: PostgresServer;
  beforeAll(async () => {
    postgres = await startPostgres({
      settings: { shared_preload_libraries: "pg_stat_statements" },
    });
  });
  afterAll(() => postgres.stop());

  it("rises by one per statement at once, not by its own", async () => {
    const first = await countStatements(postgres);
    expect(await countStatements(postgres)).toBe(first);
    await pgQuery(postgres.connectionString, "BEGIN; SELECT 1; COMMIT; SELECT 2");
    expect(await countStatements(postgres)).toBe(first + 4);
  });
});

describe("countRequests: mariadb", () => {
  let mariadb: MariadbServer;
  beforeAll(async () => {
    mariadb = await startMariadb();
  });
  afterAll(() => mariadb.stop());

  it("rises by one per statement, not by its own SHOW STATUS", async () => {
    const first = await countRequests(mariadb);
    expect(await countRequests(mariadb)).toBe(first);
    const url = new URL(mariadb.url);
    await new Promise<void>((resolve, reject) =>
      execFile(
        "mariadb",
        [
          "--no-defaults",
          "--protocol=TCP",
          `--host=${url.hostname}`,
          `--port=${url.port}`,
          "--user=locks",
          "--password=locks",
          "--batch",
          "--execute=SELECT 1; SELECT 2; SELECT 3",
        ],
        (error) => (error ? reject(error) : resolve()),
      ),
    );
    // 3 statements and the client's own one at start (the probe pays it too).
    expect(await countRequests(mariadb)).toBe(first + 4);
  });
});
