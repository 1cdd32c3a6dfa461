import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import {
  freePort,
  httpRequest,
  MissingBinaryError,
  nodeChildArgs,
  pgQuery,
  redisCommand,
  startEtcd,
  startRedis,
  trackedCounts,
  waitFor,
} from "../src/index.js";
import setupEtcd from "../src/setup/etcd.js";
import setupPostgres from "../src/setup/postgres.js";
import setupRedis from "../src/setup/redis.js";

/** A live process; a zombie (exited, not yet reaped) counts as dead. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

describe("helpers", () => {
  it("freePort() hands out distinct bindable loopback ports", async () => {
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    expect(new Set(ports).size).toBe(20);
    for (const port of ports) expect(port).toBeGreaterThan(0);
  });

  it("waitFor() resolves with the first truthy value and times out with the message", async () => {
    let n = 0;
    expect(await waitFor(() => (++n >= 3 ? n : 0), { intervalMs: 1 })).toBe(3);
    const error = await waitFor(
      () => {
        throw new Error("not yet");
      },
      { timeoutMs: 50, message: "the moon" },
    ).catch((e: unknown) => e as Error);
    expect(error.message).toMatch(
      /timed out after 50 ms waiting for the moon; last error: not yet/,
    );
    expect((error.cause as Error).message).toBe("not yet");
  });

  it("nodeChildArgs runs TypeScript from source", () => {
    expect(nodeChildArgs).toHaveLength(3);
    expect(nodeChildArgs[0]).toBe("--import");
    expect(nodeChildArgs[2]).toBe("--conditions=@locks/source");
  });
});

describe("missing binaries", () => {
  const path = process.env.PATH;
  afterEach(() => {
    process.env.PATH = path;
  });

  it("name the Debian package to install", async () => {
    process.env.PATH = "/nonexistent";
    const redis = await startRedis().catch((e: unknown) => e);
    expect(redis).toBeInstanceOf(MissingBinaryError);
    expect((redis as Error).message).toMatch(/redis-server.*"redis-server".*apt-get install/);
    const etcd = await startEtcd().catch((e: unknown) => e);
    expect((etcd as Error).message).toMatch(/etcd was not found.*"etcd-server"/);
    expect((etcd as Error).message).toMatch(/ETCD_ENDPOINTS/);
  });
});

describe("vitest global setups", () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const name of ["REDIS_URL", "ETCD_ENDPOINTS", "DATABASE_URL"]) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  function project() {
    const provided = new Map<string, unknown>();
    return {
      provided,
      provide: ((key: string, value: unknown) => {
        provided.set(key, value);
      }) as never,
    };
  }

  it("use REDIS_URL / ETCD_ENDPOINTS / DATABASE_URL when set, starting nothing", async () => {
    process.env.REDIS_URL = "redis://127.0.0.1:1";
    process.env.ETCD_ENDPOINTS = " http://127.0.0.1:2, http://127.0.0.1:3 ";
    process.env.DATABASE_URL = "postgresql://u@127.0.0.1:4/db";
    const before = trackedCounts();
    const p = project();
    const teardowns = [await setupRedis(p), await setupEtcd(p), await setupPostgres(p)];
    expect(trackedCounts()).toEqual(before);
    expect(Object.fromEntries(p.provided)).toEqual({
      redisUrl: "redis://127.0.0.1:1",
      etcdEndpoints: ["http://127.0.0.1:2", "http://127.0.0.1:3"],
      databaseUrl: "postgresql://u@127.0.0.1:4/db",
    });
    for (const teardown of teardowns) await teardown();
  });

  it("otherwise start one server each, provide it, and stop it in teardown", async () => {
    delete process.env.REDIS_URL;
    delete process.env.ETCD_ENDPOINTS;
    delete process.env.DATABASE_URL;
    const p = project();
    const teardowns = await Promise.all([setupRedis(p), setupEtcd(p), setupPostgres(p)]);
    const redisUrl = p.provided.get("redisUrl") as string;
    const [endpoint] = p.provided.get("etcdEndpoints") as string[];
    const databaseUrl = p.provided.get("databaseUrl") as string;
    expect(await redisCommand(redisUrl, ["PING"])).toBe("PONG");
    expect((await httpRequest(`${endpoint}/health`)).status).toBe(200);
    expect(await pgQuery(databaseUrl, "SELECT 1")).toEqual([["1"]]);
    await Promise.all(teardowns.map((teardown) => teardown()));
    await expect(redisCommand(redisUrl, ["PING"], { timeoutMs: 300 })).rejects.toThrow();
    await expect(httpRequest(`${endpoint}/health`, { timeoutMs: 300 })).rejects.toThrow();
    await expect(pgQuery(databaseUrl, "SELECT 1", { timeoutMs: 300 })).rejects.toThrow();
  });
});

describe("servers never outlive the test process", () => {
  const fixture = fileURLToPath(new URL("./fixtures/orphan.ts", import.meta.url));

  /** Runs the fixture; resolves with what it started and a way to wait for its end. */
  async function runOrphan(mode: string) {
    const child = spawn(process.execPath, [...nodeChildArgs, fixture, mode], {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    );
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
      });
      void exited.then(() => reject(new Error(`fixture exited early:\n${stderr}`)));
    });
    const started = JSON.parse(line) as { pids: number[]; dirs: string[] };
    return { child, exited, ...started };
  }

  async function expectCleanedUp(pids: number[], dirs: string[], timeoutMs: number) {
    await waitFor(() => pids.every((pid) => !alive(pid)) && dirs.every((d) => !existsSync(d)), {
      timeoutMs,
      message: `servers ${pids.join(", ")} gone and ${dirs.join(", ")} removed`,
    });
  }

  it("on normal exit, uncaught errors and SIGTERM (synchronous cleanup)", async () => {
    const [exiting, throwing, terminated] = await Promise.all([
      runOrphan("exit"),
      runOrphan("throw"),
      runOrphan("sigterm"),
    ]);
    try {
      for (const pid of terminated.pids) expect(alive(pid)).toBe(true);
      terminated.child.kill("SIGTERM");
      expect(await exiting.exited).toEqual({ code: 0, signal: null });
      expect((await throwing.exited).code).toBe(1);
      expect(await terminated.exited).toEqual({ code: null, signal: "SIGTERM" });
      for (const run of [exiting, throwing, terminated]) {
        // Cleanup ran before the process ended.
        await expectCleanedUp(run.pids, run.dirs, 1_000);
      }
    } finally {
      for (const run of [exiting, throwing, terminated]) run.child.kill("SIGKILL");
    }
  });

  it("on SIGKILL of the test process (the reaper)", async () => {
    const run = await runOrphan("sigkill");
    expect(run.pids).toHaveLength(2);
    for (const pid of run.pids) expect(alive(pid)).toBe(true);
    run.child.kill("SIGKILL");
    await run.exited;
    await expectCleanedUp(run.pids, run.dirs, 5_000);
  });
});
