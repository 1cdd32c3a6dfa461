/*
 * A tour of the API on the thread backend: no server needed.
 * Run with `pnpm demo`.
 */
import { createLocks } from "@locks/core";
import { threadBackend } from "@locks/thread";

const locks = createLocks(threadBackend(), { namespace: "demo", ttlMs: 10_000 });

// 1. Mutual exclusion: four tasks append to one "file" without interleaving.
const log: string[] = [];
await Promise.all(
  ["a", "b", "c", "d"].map((task) =>
    locks.withLock("log", async (lease) => {
      log.push(`${task}:start(token ${lease.fencingToken})`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      log.push(`${task}:end`);
    }),
  ),
);
console.log("1. serialized critical sections:", log.join(" "));

// 2. `await using` releases at the end of the scope; tryAcquire never waits.
{
  await using lease = await locks.acquire("invoice:42");
  const other = await locks.tryAcquire("invoice:42");
  console.log(`2. held with token ${lease.fencingToken}; a second tryAcquire got: ${other}`);
}

// 3. A timeout is a LockError with a stable code.
const holder = await locks.acquire("report");
try {
  await locks.acquire("report", { timeoutMs: 50 });
} catch (error) {
  console.log(`3. waiting for a held key: ${(error as { code: string }).code}`);
}
await holder.release();

// 4. Readers share, a writer waits for them.
const readers = await Promise.all([1, 2, 3].map(() => locks.acquire("doc:7", { mode: "shared" })));
const writer = locks.acquire("doc:7").then((lease) => {
  console.log("4. writer got doc:7 after the 3 readers left");
  return lease.release();
});
await Promise.all(readers.map((r) => r.release()));
await writer;

// 5. A semaphore admits `limit` holders at once.
let running = 0;
let peak = 0;
await Promise.all(
  Array.from({ length: 10 }, () =>
    locks.withLock(
      "gpu-pool",
      async () => {
        peak = Math.max(peak, ++running);
        await new Promise((resolve) => setTimeout(resolve, 5));
        running--;
      },
      { limit: 4 },
    ),
  ),
);
console.log(`5. 10 jobs through a semaphore of 4: at most ${peak} at once`);

await locks.close();
