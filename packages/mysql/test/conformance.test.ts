import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import type {} from "@locks/testkit";
import { inject } from "vitest";
import { mysqlBackend } from "../src/index.js";

const uri = inject("mysqlUrl");
const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));

runConformanceSuite({
  name: "mysql",
  create: () => mysqlBackend({ uri }),
  process: { module, env: { MYSQL_URL: uri } },
});

// Every wait polls: the configuration of a backend given a pool or a connection.
runConformanceSuite({
  name: "mysql polling",
  create: () => mysqlBackend({ uri, maxConnections: 1 }),
  process: { module, env: { MYSQL_URL: uri, LOCKS_MYSQL_MAX_CONNECTIONS: "1" } },
});
