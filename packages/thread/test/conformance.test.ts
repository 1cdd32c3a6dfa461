import { runConformanceSuite } from "@locks/core/conformance";
import { createSharedLockTable, threadBackend } from "../src/index.js";

runConformanceSuite({ name: "thread", create: () => threadBackend() });

runConformanceSuite({ name: "thread ttl", create: () => threadBackend({ ttl: true }), ttlMs: 300 });

// One table for the whole file: every instance made by `create` must contend on the same table.
const table = createSharedLockTable({ slots: 256 });
runConformanceSuite({ name: "thread table", create: () => threadBackend({ table }) });
