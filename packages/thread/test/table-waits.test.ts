import { randomBytes } from "node:crypto";
import { createLocks, type Lease, type Locks } from "@locks/core";
import { afterEach, describe, expect, it } from "vitest";
import { createSharedLockTable, threadBackend } from "../src/index.js";
import { tableIdle, tableWords } from "./fixtures/table-words.js";
import { until } from "./fixtures/until.js";

/*
 * The shared table under the core's waits: the waiters of one key in one
 * client share one subscription, which carries no mode, so the table's
 * waiting-writer mark follows the attempts of the client's head waiter.
 */

const opened: Locks[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((locks) => locks.close()));
});

function clients(count: number) {
  const table = createSharedLockTable({ slots: 16 });
  const namespace = `waits-${randomBytes(6).toString("hex")}`;
  const made = Array.from({ length: count }, () =>
    createLocks(threadBackend({ table }), { namespace }),
  );
  opened.push(...made);
  return { table, namespace, clients: made };
}

describe("shared table: waits of one client share one subscription", () => {
  it("a reader queued behind a writer of its own client is granted once the writer is done", async () => {
    const {
      table,
      namespace,
      clients: [holder, waiting],
    } = clients(2);
    const words = tableWords(table, namespace, "doc");
    const held = await holder!.acquire("doc");
    const writer = waiting!.acquire("doc", { timeoutMs: 10_000 });
    await until(() => words.writers() === 1, "the waiting writer marked the key");
    const reader = waiting!.acquire("doc", { mode: "shared", timeoutMs: 10_000 });
    await held.release();
    const w = await writer;
    await w.release();
    // Before the fix, the writer's mark outlived it while the reader waited: LOCK_TIMEOUT.
    const r = await reader;
    expect(r.mode).toBe("shared");
    await r.release();
    await until(() => words.waiters() === 0, "the subscription ended");
    expect(tableIdle(table)).toEqual([]);
  });

  it("a waiting writer keeps new readers of other clients out until it is in", async () => {
    const {
      table,
      namespace,
      clients: [readers, waiting, late],
    } = clients(3);
    const words = tableWords(table, namespace, "doc");
    const first = await readers!.acquire("doc", { mode: "shared" });
    const order: string[] = [];
    const writer = waiting!.acquire("doc", { timeoutMs: 10_000 }).then((lease) => {
      order.push("writer");
      return lease;
    });
    await until(() => words.writers() === 1, "the waiting writer marked the key");
    // A reader of another client would fit beside the first, but a writer waits.
    expect(await late!.tryAcquire("doc", { mode: "shared" })).toBeNull();
    const second = late!.acquire("doc", { mode: "shared", timeoutMs: 10_000 }).then((lease) => {
      order.push("reader");
      return lease;
    });
    await first.release();
    const w: Lease = await writer;
    expect(words.writers()).toBe(0);
    await w.release();
    await (await second).release();
    expect(order).toEqual(["writer", "reader"]);
    await until(() => words.waiters() === 0, "the subscriptions ended");
    expect(tableIdle(table)).toEqual([]);
  });

  it("a writer that gives up lifts its mark: readers enter", async () => {
    const {
      table,
      namespace,
      clients: [readers, waiting, late],
    } = clients(3);
    const words = tableWords(table, namespace, "doc");
    const first = await readers!.acquire("doc", { mode: "shared" });
    const controller = new AbortController();
    const writer = waiting!.acquire("doc", { signal: controller.signal }).catch(() => "aborted");
    await until(() => words.writers() === 1, "the waiting writer marked the key");
    controller.abort();
    expect(await writer).toBe("aborted");
    await until(() => words.writers() === 0, "the mark was lifted");
    const second = await late!.tryAcquire("doc", { mode: "shared" });
    expect(second).not.toBeNull();
    await Promise.all([first.release(), second!.release()]);
    await until(() => words.waiters() === 0, "the subscription ended");
    expect(tableIdle(table)).toEqual([]);
  });
});
