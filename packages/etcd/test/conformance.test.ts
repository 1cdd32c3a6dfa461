import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import type {} from "@locks/testkit";
import { inject } from "vitest";
import { etcdBackend } from "../src/index.js";

const endpoints = inject("etcdEndpoints");

runConformanceSuite({
  name: "etcd",
  create: () => etcdBackend({ hosts: endpoints }),
  process: {
    module: fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url)),
    env: { ETCD_ENDPOINTS: endpoints.join(",") },
  },
  ttlMs: 1_000,
});
