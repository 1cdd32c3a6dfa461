/*
 * The README's examples, type-checked with the tests (this file is not run).
 * Keep the two in step.
 */
import { createLocks, type Locks } from "@locks/core";
import pg from "pg";
import { postgresBackend } from "../src/index.js";

declare const db: { write(row: object, options: { fence: bigint }): Promise<void> };

export async function connectionString(): Promise<void> {
  const locks = createLocks(postgresBackend({ connectionString: "postgresql://app@db:5432/app" }), {
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

export async function ownClient(): Promise<void> {
  const client = new pg.Client({ connectionString: "postgresql://app@db:5432/app" });
  await client.connect();
  const locks = createLocks(postgresBackend({ client }), { namespace: "billing" });
  await locks.close();
  await client.end();
}

export async function holders(locks: Locks): Promise<void> {
  await locks.acquire("report", { holder: "worker-7" });
  await locks.inspect("report"); // { key, holders: [{ holder: "worker-7", mode, fencingToken, expiresAt: undefined }] }
  await locks.forceRelease("report"); // admin: ends the session holding it
}
