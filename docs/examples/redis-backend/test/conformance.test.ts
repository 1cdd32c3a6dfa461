import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { afterAll } from "vitest";
// The repository's test servers (a private package, reached by path from the docs).
import { redisUrlFromEnv, startRedis } from "../../../../packages/testkit/src/index.js";
import { tinyRedisBackend } from "../src/index.js";

// REDIS_URL, or a redis-server of our own on a free loopback port.
const server = redisUrlFromEnv() === undefined ? await startRedis() : undefined;
const url = redisUrlFromEnv() ?? server?.url ?? "";
afterAll(() => server?.stop());

runConformanceSuite({
  name: "tiny-redis",
  create: () => tinyRedisBackend({ url }),
  process: {
    module: fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url)),
    env: { REDIS_URL: url },
  },
});
