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
