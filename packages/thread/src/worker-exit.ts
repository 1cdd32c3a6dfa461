import type { Worker } from "node:worker_threads";
import { invalidArgument } from "@locks/core/backend";
import {
  BUCKET_WORDS,
  bucketOf,
  isSharedLockTable,
  LATCH,
  type SharedLockTable,
  TableView,
} from "./table.js";

/**
 * Frees what `worker` still holds in `table` once it has exited, however it
 * ended (it returned, threw, called `process.exit()`, or was terminated): its
 * holds, its waiting writers, and a bucket it died latching. The keys'
 * waiters are woken; every later grant's token is higher than the dead
 * holds' (one table-wide counter). Call it in the thread that starts the
 * worker, right after `new Worker(...)`: a worker's `threadId` is known only
 * while it runs. Resolves, after the exit, with the number of holds freed.
 *
 * ```ts
 * const worker = new Worker(url, { workerData: { table } });
 * void releaseOnExit(table, worker);
 * ```
 */
export function releaseOnExit(table: SharedLockTable, worker: Worker): Promise<number> {
  if (typeof table !== "object" || table === null || !isSharedLockTable(table)) {
    throw invalidArgument("table", "must be a table made by createSharedLockTable()");
  }
  const id = (worker as Partial<Worker> | null)?.threadId;
  if (typeof id !== "number" || typeof worker.once !== "function") {
    throw invalidArgument("worker", "must be a Worker of node:worker_threads");
  }
  if (id < 0)
    throw invalidArgument("worker", "has already exited: register it right after new Worker()");
  const view = new TableView(table);
  return new Promise((resolve) => {
    worker.once("exit", () => resolve(freeThread(view, id)));
  });
}

/**
 * Frees everything thread `dead` left in the table. Its latches are taken
 * over (it may have died between two writes under one), and each bucket it
 * touched is counted again from the records of the other threads, so a
 * half-done change of the dead thread leaves nothing behind.
 */
async function freeThread(view: TableView, dead: number): Promise<number> {
  const mark = dead + 1;
  const words = view.words;
  const takenOver = new Set<number>();
  for (let bucket = 0; bucket < view.slots * BUCKET_WORDS; bucket += BUCKET_WORDS) {
    if (
      Atomics.load(words, bucket + LATCH) === mark &&
      Atomics.compareExchange(words, bucket + LATCH, mark, view.me) === mark
    ) {
      takenOver.add(bucket);
    }
  }
  const buckets = new Set(takenOver);
  view.records.forEach((record, entry, owner, writer) => {
    if (owner !== mark) return;
    // Taken but never bound: no other thread can see it.
    if (entry >= 0) buckets.add(bucketOf(entry));
    else if (writer) view.records.freeWriter(record);
    else view.records.free(record);
  });
  let freed = 0;
  for (const bucket of buckets) {
    if (!takenOver.has(bucket) && !view.latch(bucket)) await view.latchLater(bucket);
    freed += view.evict(bucket, (_entry, owner) => owner === mark);
    view.unlatch(bucket);
    view.changed(bucket);
  }
  return freed;
}
