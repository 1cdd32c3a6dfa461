/*
 * Faults across real OS processes: contention on one log file, shared mode
 * and semaphores, a holder killed, paused (SIGSTOP) or blocked past its TTL.
 * Faults are triggered by events (the worker reports "acquired", then it is
 * stopped), never by sleeps. Takeover races and clock steps are in
 * takeover.test.ts (a file of their own, so that vitest runs both at once).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createLocks, type Locks } from "@locks/core";
import { checkHistory, History, historyNow } from "@locks/core/history";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { fileBackend } from "../src/index.js";
import { CONFIRM_MS } from "../src/staleness.js";
import { MIN_STALE_MS } from "../src/store.js";
import { randomNamespace, startWorkers, tempDirectory } from "./helpers.js";

const dir = tempDirectory("faults");
afterAll(() => dir.remove());

/** The shortest TTL the backend honours for a crashed holder: its minimum staleness. */
const TTL = MIN_STALE_MS;

function client(namespace: string): Locks {
  const locks = createLocks(fileBackend({ directory: dir.path }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

describe("processes contending on one key", () => {
  it("4 processes x 200 critical sections append to one log: 800 intact lines, valid history", async () => {
    const namespace = randomNamespace();
    const log = join(dir.path, `${namespace}.log`);
    const workers = await startWorkers(4, { directory: dir.path, namespace });
    const runs = workers.map((w) => w.contend("log", { loops: 200, log }));
    const history = new History();
    for (const holds of await Promise.all(runs)) history.add(...holds);
    expect(history.holds).toHaveLength(800);
    history.assertValid({ fencing: true });

    const lines = readFileSync(log, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toHaveLength(800);
    const perProcess = new Map<string, number>();
    let last = -1n;
    for (const line of lines) {
      const match = /^(\d+) (\d+) (\d+)$/.exec(line);
      expect(match, `intact line: ${JSON.stringify(line)}`).not.toBeNull();
      const [, pid, , token] = match!;
      perProcess.set(pid!, (perProcess.get(pid!) ?? 0) + 1);
      // The log is in grant order, so fencing tokens increase line by line.
      expect(BigInt(token!) > last, `token ${token} after ${last}`).toBe(true);
      last = BigInt(token!);
    }
    expect([...perProcess.values()]).toEqual([200, 200, 200, 200]);
    await Promise.all(workers.map((w) => w.close()));
  });
});

describe("shared mode and semaphores across processes", () => {
  it("3 processes, a semaphore of 2: never more than 2 holders", async () => {
    const namespace = randomNamespace();
    const workers = await startWorkers(3, { directory: dir.path, namespace });
    const runs = workers.map((w) =>
      w.contend("pool", { loops: 40, limit: 2, holdMs: [0, 1, 2, 3] }),
    );
    const history = new History();
    for (const holds of await Promise.all(runs)) history.add(...holds);
    expect(history.holds).toHaveLength(120);
    // Overlapping holders' tokens follow the order of admission, which can differ from the
    // order the processes see their grants in; the suite checks these modes without fencing too.
    history.assertValid({ fencing: false });
  });

  it("3 processes, readers and writers: writers alone, readers only with readers", async () => {
    const namespace = randomNamespace();
    const workers = await startWorkers(3, { directory: dir.path, namespace });
    const runs = workers.map((w) =>
      w.contend("doc", { loops: 30, mode: "mixed", holdMs: [0, 1, 2, 3] }),
    );
    const history = new History();
    for (const holds of await Promise.all(runs)) history.add(...holds);
    expect(history.holds).toHaveLength(90);
    expect(history.holds.some((h) => h.mode === "shared")).toBe(true);
    history.assertValid({ fencing: false });
    // Exclusive holds alone do follow the fence: each began after every earlier one ended.
    const writers = history.holds.filter((h) => h.mode === "exclusive");
    expect(checkHistory(writers, { fencing: true })).toEqual([]);
  });
});

describe("a holder that stops", () => {
  it("SIGKILL: another process gets the key after the TTL, with a higher token", async () => {
    const namespace = randomNamespace();
    const [holder] = await startWorkers(1, { directory: dir.path, namespace });
    const acquired = await holder!.acquire("killed", { ttlMs: TTL });
    holder!.kill("SIGKILL");
    await holder!.exited;
    const killedAt = historyNow();
    const locks = client(namespace);
    const lease = await locks.acquire("killed", { timeoutMs: TTL * 5 });
    const grantedAt = historyNow();
    expect(lease.fencingToken > BigInt(acquired.token)).toBe(true);
    // Never before the TTL since the holder's last refresh (at or after its grant)...
    expect(grantedAt - acquired.at).toBeGreaterThanOrEqual(TTL - 20);
    // ...and soon after it: staleness, plus the confirmation, plus scheduling slack.
    expect(grantedAt - killedAt).toBeLessThan(TTL + CONFIRM_MS + 2_000);
    await lease.release();
  });

  it("SIGSTOP past the TTL, then SIGCONT: the other side got the lock, the paused one sees signal.aborted before it can extend", async () => {
    const namespace = randomNamespace();
    const [holder] = await startWorkers(1, { directory: dir.path, namespace });
    const acquired = await holder!.acquire("paused", { ttlMs: TTL });
    holder!.kill("SIGSTOP");

    const locks = client(namespace);
    const lease = await locks.acquire("paused", { timeoutMs: TTL * 5, ttlMs: 10_000 });
    expect(lease.fencingToken > BigInt(acquired.token)).toBe(true);

    const resumedAt = historyNow();
    holder!.kill("SIGCONT");
    const lost = await holder!.next("lost");
    expect(lost.code).toBe("LOCK_LOST");
    // Nothing the paused holder did after resuming extended its lock.
    expect(lost.extensions.filter((e) => e.at >= resumedAt && e.ok)).toEqual([]);

    // Its release (owner-checked) leaves the new holder's lock alone.
    await holder!.release();
    expect(lease.signal.aborted).toBe(false);
    expect(await client(namespace).tryAcquire("paused")).toBeNull();
    await lease.extend();
    await lease.release();
  });

  it("an event loop blocked past the TTL: same outcome, the blocked holder learns of the loss", async () => {
    const namespace = randomNamespace();
    const [holder] = await startWorkers(1, { directory: dir.path, namespace });
    const acquired = await holder!.acquire("blocked", { ttlMs: TTL });
    const blocked = holder!.block(TTL + CONFIRM_MS + 2_500);

    const locks = client(namespace);
    const lease = await locks.acquire("blocked", { timeoutMs: TTL * 5, ttlMs: 10_000 });
    expect(lease.fencingToken > BigInt(acquired.token)).toBe(true);
    const unblockedAt = await blocked;
    const lost = await holder!.next("lost");
    expect(lost.code).toBe("LOCK_LOST");
    expect(lost.extensions.filter((e) => e.at >= unblockedAt && e.ok)).toEqual([]);
    await holder!.release();
    expect(lease.signal.aborted).toBe(false);
    await lease.release();
  });
});
