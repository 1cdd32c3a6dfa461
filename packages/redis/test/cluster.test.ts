import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { startRedisCluster } from "@locks/testkit";
import { afterAll } from "vitest";
import { clusterBackend } from "./fixtures/cluster.js";

const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));
const cluster = await startRedisCluster({ masters: 3 });
afterAll(() => cluster.stop());
const nodes = cluster.startupNodes;

runConformanceSuite({
  name: "redis cluster",
  create: () => clusterBackend(nodes),
  process: { module, env: { REDIS_CLUSTER: nodes.map((n) => `${n.host}:${n.port}`).join(",") } },
  ttlMs: 1000,
});
