import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runConformanceSuite } from "@locks/core/conformance";
import { afterAll } from "vitest";
import { fileBackend } from "../src/index.js";

// The suite again with io: "async" (the protocol's calls interleave within a process), in a
// file of its own so that vitest runs it beside the sync one.
const directory = mkdtempSync(join(tmpdir(), "locks-file-conformance-async-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));
const module = fileURLToPath(new URL("./fixtures/backend.ts", import.meta.url));

runConformanceSuite({
  name: "file async io",
  create: () => fileBackend({ directory, io: "async" }),
  process: { module, env: { LOCKS_FILE_DIR: directory, LOCKS_FILE_IO: "async" } },
  ttlMs: 2_000, // the backend's floor (capabilities.minTtlMs): its shortest staleness
});
