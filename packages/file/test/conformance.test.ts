import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { afterAll } from "vitest";
import { fileBackend } from "../src/index.js";

const directory = mkdtempSync(join(tmpdir(), "locks-file-conformance-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));
const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));

runConformanceSuite({
  name: "file",
  create: () => fileBackend({ directory }),
  process: { module, env: { LOCKS_FILE_DIR: directory } },
  ttlMs: 2_000, // the backend's floor (capabilities.minTtlMs): its shortest staleness
});
