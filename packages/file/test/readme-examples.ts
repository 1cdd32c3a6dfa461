/*
 * The README's examples, type-checked with the tests (this file is not run).
 * Keep the two in step.
 */
import { appendFile } from "node:fs/promises";
import { createLocks } from "@locks/core";
import { fileBackend } from "../src/index.js";

export async function appendToOneLog(): Promise<void> {
  const locks = createLocks(fileBackend({ directory: "/var/lib/myapp/locks" }), {
    namespace: "myapp",
    ttlMs: 10_000,
  });
  // Several processes append to one log file, one at a time.
  await locks.withLock("app.log", async (lease) => {
    await appendFile("/var/log/myapp/app.log", `${process.pid} token=${lease.fencingToken}\n`);
  });
  await locks.close();
}

export function options(): void {
  fileBackend({ directory: "/run/lock/myapp", directoryMode: 0o750, io: "async" });
}
