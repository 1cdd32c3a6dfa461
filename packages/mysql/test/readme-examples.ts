/*
 * The README's examples, type-checked with the tests (this file is not run).
 * Keep the two in step.
 */
import { createLocks, type Locks } from "@locks/core";
import mysql from "mysql2/promise";
import { mysqlBackend } from "../src/index.js";

declare const db: { write(row: object, options: { fence: bigint }): Promise<void> };

export async function uri(): Promise<void> {
  const locks = createLocks(mysqlBackend({ uri: "mysql://app:secret@db:3306/app" }), {
    namespace: "billing",
  });
  const lease = await locks.acquire("invoice:42", { timeoutMs: 5_000 });
  try {
    await db.write({ id: 42 }, { fence: lease.fencingToken });
  } finally {
    await lease.release();
  }
  await locks.close();
}

export async function ownPool(): Promise<void> {
  const pool = mysql.createPool("mysql://app:secret@db:3306/app");
  const locks = createLocks(mysqlBackend({ pool }), { namespace: "billing" });
  await locks.close();
  await pool.end();
}

export async function holders(locks: Locks): Promise<void> {
  const lease = await locks.acquire("report", { holder: "worker-7" });
  await locks.inspect("report");
  await locks.forceRelease("report");
  await lease.release();
}
