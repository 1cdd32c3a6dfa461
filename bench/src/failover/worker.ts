import { parentPort, threadId, workerData } from "node:worker_threads";
import { createLocks } from "@locks/core";
import { type SharedLockTable, threadBackend } from "@locks/thread";

/*
 * One replica of the failover benchmark on @locks/thread's shared table: a
 * worker thread running `locks.lead`; the parent terminates the leader and
 * `releaseOnExit` frees what it held.
 */
const { table, key } = workerData as { table: SharedLockTable; key: string };
const locks = createLocks(threadBackend({ table }), { namespace: "failover" });
parentPort!.postMessage("CAMPAIGNING");
await locks.lead(
  key,
  async (term) => {
    parentPort!.postMessage(`LEADING ${term.fencingToken}`);
    await new Promise((resolve) => term.signal.addEventListener("abort", resolve));
  },
  { holder: `worker-${threadId}` },
);
