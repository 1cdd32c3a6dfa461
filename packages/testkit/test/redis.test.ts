import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type RedisServer,
  redisCommand,
  StartError,
  startRedis,
  startRedisCluster,
  startRedisGroup,
} from "../src/index.js";

describe("startRedis", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());

  it("answers PING over TCP on 127.0.0.1 only, without persistence", async () => {
    expect(redis.host).toBe("127.0.0.1");
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`);
    expect(await redisCommand(redis.url, ["PING"])).toBe("PONG");
    expect(await redisCommand(redis, ["CONFIG", "GET", "bind"])).toEqual(["bind", "127.0.0.1"]);
    expect(await redisCommand(redis, ["CONFIG", "GET", "save"])).toEqual(["save", ""]);
    expect(await redisCommand(redis, ["CONFIG", "GET", "appendonly"])).toEqual([
      "appendonly",
      "no",
    ]);
    expect(await redisCommand(redis, ["CONFIG", "GET", "protected-mode"])).toEqual([
      "protected-mode",
      "yes",
    ]);
  });

  it("pause() makes requests time out until resume()", async () => {
    redis.pause();
    try {
      await expect(redisCommand(redis.url, ["PING"], { timeoutMs: 300 })).rejects.toThrow(
        /no reply within 300 ms/,
      );
    } finally {
      redis.resume();
    }
    expect(await redisCommand(redis.url, ["PING"])).toBe("PONG");
  });

  it("a reply taken while paused arrives after resume()", async () => {
    redis.pause();
    const reply = redisCommand(redis.url, ["ECHO", "late"], { timeoutMs: 5_000 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    redis.resume();
    expect(await reply).toBe("late");
  });

  it("kill() then restart() comes back on the same port, data gone", async () => {
    await redisCommand(redis.url, ["SET", "k", "v"]);
    const { pid, port } = redis;
    await redis.kill();
    await expect(redisCommand(redis.url, ["PING"], { timeoutMs: 500 })).rejects.toThrow();
    await redis.restart();
    expect(redis.port).toBe(port);
    expect(redis.pid).not.toBe(pid);
    expect(await redisCommand(redis.url, ["PING"])).toBe("PONG");
    expect(await redisCommand(redis.url, ["GET", "k"])).toBeNull();
  });

  it("restart() of a running server stops it first", async () => {
    const pid = redis.pid;
    await redis.restart();
    expect(redis.pid).not.toBe(pid);
    expect(await redisCommand(redis.url, ["PING"])).toBe("PONG");
  });
});

describe("startRedis options", () => {
  it("appendonly + appendfsync always keeps writes across SIGKILL", async () => {
    const redis = await startRedis({ appendonly: true, appendfsync: "always" });
    try {
      expect(await redisCommand(redis.url, ["CONFIG", "GET", "appendfsync"])).toEqual([
        "appendfsync",
        "always",
      ]);
      await redisCommand(redis.url, ["SET", "durable", "yes"]);
      await redis.kill();
      await redis.restart();
      expect(await redisCommand(redis.url, ["GET", "durable"])).toBe("yes");
    } finally {
      await redis.stop();
    }
  });

  it("stop() is idempotent and removes the directory; restart() after stop() fails", async () => {
    const redis = await startRedis({ args: ["--maxmemory", "10mb"] });
    expect(await redisCommand(redis.url, ["CONFIG", "GET", "maxmemory"])).toEqual([
      "maxmemory",
      "10485760",
    ]);
    expect(existsSync(redis.dir)).toBe(true);
    const pid = redis.pid;
    await Promise.all([redis.stop(), redis.stop()]);
    await redis.stop();
    expect(existsSync(redis.dir)).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
    await expect(redis.restart()).rejects.toThrow(/stopped/);
  });

  it("a port taken by someone else is reported as address in use (and retried)", async () => {
    const squatter = createServer().listen(0, "127.0.0.1");
    await once(squatter, "listening");
    const taken = (squatter.address() as { port: number }).port;
    try {
      // A later --port overrides the free port the testkit picked.
      const error = await startRedis({ args: ["--port", String(taken)] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StartError);
      expect((error as StartError).addressInUse).toBe(true);
      expect((error as Error).message).toMatch(/exited during startup.*Address already in use/s);
    } finally {
      squatter.close();
    }
  });

  it("startRedisGroup starts independent servers", async () => {
    const group = await startRedisGroup(3);
    try {
      expect(new Set(group.map((r) => r.port)).size).toBe(3);
      await redisCommand(group[0]!.url, ["SET", "only-here", "1"]);
      expect(await redisCommand(group[1]!.url, ["GET", "only-here"])).toBeNull();
      expect(await redisCommand(group[2]!.url, ["PING"])).toBe("PONG");
    } finally {
      await Promise.all(group.map((r) => r.stop()));
    }
  });
});

describe("startRedisCluster", () => {
  it("reaches cluster_state:ok on every node and routes by slot", async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    try {
      expect(cluster.nodes).toHaveLength(3);
      expect(cluster.startupNodes).toEqual(
        cluster.nodes.map((n) => ({ host: "127.0.0.1", port: n.port })),
      );
      for (const node of cluster.nodes) {
        const info = await redisCommand(node.url, ["CLUSTER", "INFO"]);
        expect(info).toMatch(/cluster_state:ok/);
        expect(info).toMatch(/cluster_known_nodes:3/);
        expect(readFileSync(`${node.dir}/nodes.conf`, "utf8")).toMatch(/myself/);
      }
      // Keys sharing a hash tag live on one node, which answers; others redirect.
      const slot = await redisCommand(cluster.nodes[0]!.url, ["CLUSTER", "KEYSLOT", "lock:{k}"]);
      const replies = await Promise.allSettled(
        cluster.nodes.map((n) => redisCommand(n.url, ["SET", "lock:{k}", "1"])),
      );
      expect(replies.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const moved = replies.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(String(moved.reason)).toMatch(new RegExp(`MOVED ${slot} 127\\.0\\.0\\.1:`));
    } finally {
      await cluster.stop();
    }
    for (const node of cluster.nodes) expect(existsSync(node.dir)).toBe(false);
  });

  it("refuses fewer than 3 masters", async () => {
    await expect(startRedisCluster({ masters: 2 })).rejects.toThrow(/masters must be/);
  });
});
