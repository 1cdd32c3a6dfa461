/*
 * The README's examples, type-checked with the tests (this file is not run).
 * Keep the two in step.
 */
import { createLocks } from "@locks/core";
import { Cluster, Redis } from "ioredis";
import { redisBackend } from "../src/index.js";

declare const db: { write(row: object, options: { fence: bigint }): Promise<void> };

export async function oneServer(): Promise<void> {
  const locks = createLocks(redisBackend({ url: "redis://127.0.0.1:6379" }), {
    namespace: "billing",
    ttlMs: 30_000,
  });
  const lease = await locks.acquire("invoice:42", { timeoutMs: 5_000 });
  try {
    await db.write({ id: 42 }, { fence: lease.fencingToken });
  } finally {
    await lease.release();
  }
  await locks.close();
}

export async function ownClient(): Promise<void> {
  // Your client: the backend never closes it, and never sends a lock command while it is not ready.
  const client = new Redis("redis://127.0.0.1:6379", {
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
  });
  const locks = createLocks(redisBackend({ client }), { namespace: "billing" });
  await locks.withLock("report", async () => {
    // ...
  });
  await locks.close();
  await client.quit();
}

export async function cluster(): Promise<void> {
  const client = new Cluster([{ host: "10.0.0.1", port: 6379 }], {
    enableOfflineQueue: false,
    redisOptions: { autoResendUnfulfilledCommands: false },
  });
  const locks = createLocks(redisBackend({ client }), { namespace: "billing" });
  await using lease = await locks.acquire("invoice:42");
  void lease.fencingToken;
}

export async function redlock(): Promise<void> {
  const locks = createLocks(
    redisBackend({
      urls: [
        "redis://a:6379",
        "redis://b:6379",
        "redis://c:6379",
        "redis://d:6379",
        "redis://e:6379",
      ],
    }),
    { namespace: "billing" },
  );
  const lease = await locks.acquire("invoice:42", { timeoutMs: 5_000 });
  lease.signal.addEventListener("abort", () => {
    // Lost (or released): stop writing.
  });
  await lease.release();
  await locks.close();
}

export async function fair(): Promise<void> {
  const locks = createLocks(redisBackend({ url: "redis://127.0.0.1:6379", fair: true }), {
    namespace: "jobs",
  });
  const reader = await locks.acquire("doc:7", { mode: "shared" });
  const slot = await locks.acquire("gpu-pool", { limit: 4 });
  await Promise.all([reader.release(), slot.release()]);
  await locks.close();
}
