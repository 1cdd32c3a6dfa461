import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { startRedisGroup } from "@locks/testkit";
import { afterAll } from "vitest";
import { redisBackend } from "../src/index.js";

const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));
const members = await startRedisGroup(5);
afterAll(() => Promise.all(members.map((m) => m.stop())));
const urls = members.map((m) => m.url);

runConformanceSuite({
  name: "redlock",
  create: () => redisBackend({ urls }),
  process: { module, env: { REDIS_URLS: urls.join(",") } },
  ttlMs: 1000,
});
