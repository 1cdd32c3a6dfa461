/*
 * The shortest TTL the file backend honours, and that no retry of its own
 * keeps the event loop from running (synchronous I/O never yields by itself).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createLocks, isLockError } from "@locks/core";
import { nodeChildArgs } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { fileBackend } from "../src/index.js";
import { MIN_STALE_MS } from "../src/store.js";
import { randomNamespace, tempDirectory } from "./helpers.js";

const dir = tempDirectory("ttl-floor");
afterAll(() => dir.remove());

const heldKeyWaiter = fileURLToPath(new URL("./fixtures/held-key-waiter.ts", import.meta.url));

describe("ttlMs floor", () => {
  it("is the shortest staleness (2 s): shorter TTLs are refused before any I/O", async () => {
    const backend = fileBackend({ directory: `${dir.path}/never-made` });
    expect(backend.capabilities.minTtlMs).toBe(MIN_STALE_MS);
    expect(MIN_STALE_MS).toBe(2_000);
    const locks = createLocks(backend, { namespace: randomNamespace() });
    onTestFinished(() => locks.close());
    for (const ttlMs of [1, 10, 1_000, MIN_STALE_MS - 1]) {
      const refused = await locks.acquire("k", { ttlMs, timeoutMs: 1_000 }).catch((e) => e);
      expect(isLockError(refused, "INVALID_ARGUMENT"), `ttlMs ${ttlMs}`).toBe(true);
      expect(String(refused.message)).toMatch(/ttlMs/);
      expect(await locks.tryAcquire("k", { ttlMs }).catch((e) => e.code)).toBe("INVALID_ARGUMENT");
    }
    expect(() => createLocks(fileBackend({ directory: dir.path }), { ttlMs: 1_000 })).toThrow(
      /ttlMs/,
    );
    // Refused before any I/O: the directory was never created.
    expect(existsSync(`${dir.path}/never-made`)).toBe(false);
    const lease = await locks.acquire("k", { ttlMs: MIN_STALE_MS });
    await expect(lease.extend(MIN_STALE_MS - 1)).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    await lease.release();
  });

  it("with a held key at the floor TTL, a tryAcquire loop and acquire({ timeoutMs: 1000 }) leave timers running (sync io, own process)", async () => {
    const output = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [...nodeChildArgs, heldKeyWaiter],
        {
          env: { ...process.env, LOCKS_FILE_DIR: dir.path },
          // A frozen child never ends by itself: kill it (the test then fails).
          timeout: 60_000,
          killSignal: "SIGKILL",
        },
        (error, stdout, stderr) => {
          if (error) reject(new Error(`child failed: ${error.message}\n${stderr}`));
          else resolve(stdout);
        },
      );
    });
    const result = JSON.parse(output.trim()) as {
      ttlMs: number;
      attempts: number;
      loopTicks: number;
      acquireTicks: number;
      code: string;
    };
    expect(result.ttlMs).toBe(MIN_STALE_MS);
    expect(result.code).toBe("LOCK_TIMEOUT");
    expect(result.attempts).toBeGreaterThan(10);
    // A 5 ms interval over 300 ms and 1 s: a loaded machine still runs it several times.
    expect(result.loopTicks).toBeGreaterThan(3);
    expect(result.acquireTicks).toBeGreaterThan(3);
  }, 90_000);
});
