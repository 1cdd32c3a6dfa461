import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { inject } from "vitest";
import { redisBackend } from "../src/index.js";

const url = inject("redisUrl");
const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));

runConformanceSuite({
  name: "redis",
  create: () => redisBackend({ url }),
  process: { module, env: { REDIS_URL: url } },
  ttlMs: 1000,
});

runConformanceSuite({
  name: "redis fair",
  create: () => redisBackend({ url, fair: true }),
  process: { module, env: { REDIS_URL: url, REDIS_FAIR: "1" } },
  ttlMs: 1000,
});
