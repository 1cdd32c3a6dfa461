import { existsSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type EtcdServer,
  httpRequest,
  startEtcd,
  startEtcdCluster,
  waitFor,
} from "../src/index.js";

const b64 = (text: string) => Buffer.from(text).toString("base64");

async function put(endpoint: string, key: string, value: string, timeoutMs = 2_000) {
  const reply = await httpRequest(`${endpoint}/v3/kv/put`, {
    body: { key: b64(key), value: b64(value) },
    timeoutMs,
  });
  expect(reply.status).toBe(200);
}

async function get(endpoint: string, key: string): Promise<string | undefined> {
  const reply = await httpRequest(`${endpoint}/v3/kv/range`, { body: { key: b64(key) } });
  const kvs = (JSON.parse(reply.body) as { kvs?: { value: string }[] }).kvs;
  return kvs?.[0] ? Buffer.from(kvs[0].value, "base64").toString() : undefined;
}

describe("startEtcd", () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd();
  });
  afterAll(() => etcd.stop());

  it("answers over HTTP on 127.0.0.1", async () => {
    expect(etcd.endpoint).toBe(`http://127.0.0.1:${etcd.clientPort}`);
    const version = await httpRequest(`${etcd.endpoint}/version`);
    expect(JSON.parse(version.body)).toHaveProperty("etcdserver");
    await put(etcd.endpoint, "a", "1");
    expect(await get(etcd.endpoint, "a")).toBe("1");
  });

  it("pause() makes requests time out until resume()", async () => {
    etcd.pause();
    try {
      await expect(httpRequest(`${etcd.endpoint}/health`, { timeoutMs: 300 })).rejects.toThrow(
        /no HTTP reply/,
      );
    } finally {
      etcd.resume();
    }
    expect((await httpRequest(`${etcd.endpoint}/health`)).status).toBe(200);
  });

  it("kill() then restart() keeps the data and the endpoint", async () => {
    await put(etcd.endpoint, "durable", "yes");
    const { pid, endpoint } = etcd;
    await etcd.kill();
    await expect(httpRequest(`${endpoint}/health`, { timeoutMs: 500 })).rejects.toThrow();
    await etcd.restart();
    expect(etcd.endpoint).toBe(endpoint);
    expect(etcd.pid).not.toBe(pid);
    expect(await get(etcd.endpoint, "durable")).toBe("yes");
  });
});

describe("startEtcdCluster", () => {
  it("3 members elect a leader; killing it elects another; it rejoins on restart", async () => {
    const cluster = await startEtcdCluster({ members: 3 });
    try {
      expect(cluster.endpoints).toEqual(cluster.members.map((m) => m.endpoint));
      expect(new Set(cluster.members.map((m) => m.name)).size).toBe(3);
      const leader = await cluster.leader();
      expect(cluster.members).toContain(leader);
      await put(cluster.endpoints[0]!, "replicated", "yes");
      for (const endpoint of cluster.endpoints) {
        await waitFor(async () => (await get(endpoint, "replicated")) === "yes");
      }

      await leader.kill();
      const next = await cluster.leader();
      expect(next).not.toBe(leader);
      await put(next.endpoint, "after-failover", "yes");

      await leader.restart();
      expect(await get(leader.endpoint, "after-failover")).toBe("yes");
    } finally {
      await cluster.stop();
    }
    for (const member of cluster.members) expect(existsSync(member.dir)).toBe(false);
  });
});
