import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import type {} from "@locks/testkit";
import { inject } from "vitest";
import { postgresBackend } from "../src/index.js";

const connectionString = inject("databaseUrl");
const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));

runConformanceSuite({
  name: "postgres",
  create: () => postgresBackend({ connectionString }),
  process: { module, env: { DATABASE_URL: connectionString } },
});

// Every wait polls, woken by LISTEN/NOTIFY: the configuration of a backend given a client.
runConformanceSuite({
  name: "postgres polling",
  create: () => postgresBackend({ connectionString, maxConnections: 1 }),
  process: { module, env: { DATABASE_URL: connectionString, LOCKS_PG_MAX_CONNECTIONS: "1" } },
});
