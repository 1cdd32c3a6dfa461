/*
 * The stale takeover across real OS processes: a contender paused in the
 * middle of a takeover (proper-lockfile issue #121), and wall-clock steps
 * (proper-lockfile PR #109). Faults are triggered by events (the worker
 * reports "claiming", then it is stopped), never by sleeps.
 */
import { mkdirSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { createLocks, type Locks } from "@locks/core";
import { waitFor } from "@locks/testkit";
import { check, lock } from "proper-lockfile";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { fileBackend } from "../src/index.js";
import { CONFIRM_MS } from "../src/staleness.js";
import { MIN_STALE_MS } from "../src/store.js";
import { faketime, filesOf, randomNamespace, startWorkers, tempDirectory } from "./helpers.js";

const dir = tempDirectory("takeover");
afterAll(() => dir.remove());

/** The shortest TTL the backend honours for a crashed holder: its minimum staleness. */
const TTL = MIN_STALE_MS;
const HOUR = 3_600_000;

function client(namespace: string): Locks {
  const locks = createLocks(fileBackend({ directory: dir.path }), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

describe("stale takeover race (proper-lockfile issue #121)", () => {
  it("a contender paused right before removing a stale lock cannot remove the fresh lock taken meanwhile", async () => {
    const namespace = randomNamespace();
    const [dead, paused] = await startWorkers(2, { directory: dir.path, namespace });
    const first = await dead!.acquire("race", { ttlMs: TTL });
    dead!.kill("SIGKILL");
    await dead!.exited;

    // The contender will stop itself right before claiming the stale lock.
    await paused!.call("pauseBeforeClaim");
    const acquiring = paused!.acquire("race", { ttlMs: TTL });
    await paused!.next("claiming", TTL * 5);

    // Meanwhile this process takes the stale lock over itself.
    const locks = client(namespace);
    const fresh = await locks.acquire("race", { timeoutMs: TTL * 5, ttlMs: 10_000 });
    expect(fresh.fencingToken > BigInt(first.token)).toBe(true);

    // The paused contender resumes exactly where it stopped: its claim finds nothing to claim.
    paused!.kill("SIGCONT");
    expect((await paused!.next("claimed")).claimed).toBe(false);
    // The fresh lock is intact and still held: a third party cannot take it, the contender waits.
    expect(await client(namespace).tryAcquire("race")).toBeNull();
    await fresh.extend();
    expect(fresh.signal.aborted).toBe(false);
    expect(paused!.inFlight).toBe(1);

    await fresh.release();
    const next = await acquiring;
    expect(BigInt(next.token) > fresh.fencingToken).toBe(true);
  });

  it("for comparison, proper-lockfile alone deletes the fresh lock in that window", async () => {
    const base = join(dir.path, `raw-${randomNamespace()}`);
    mkdirSync(base);
    const lockPath = join(base, "k.lock");
    // A lock abandoned long ago.
    mkdirSync(lockPath);
    const old = new Date(Date.now() - 60_000);
    utimesSync(lockPath, old, old);

    // Contender A judges it stale, then is held up right before its rmdir.
    let resumeA!: () => void;
    const aPaused = new Promise<void>((resolve) => {
      resumeA = resolve;
    });
    let aReachedRmdir!: () => void;
    const aAtRmdir = new Promise<void>((resolve) => {
      aReachedRmdir = resolve;
    });
    const fs = await import("node:fs");
    const slowFs = {
      ...fs,
      rmdir: (path: string, done: (error: Error | null) => void) => {
        aReachedRmdir();
        aPaused.then(() => fs.rmdir(path, done));
      },
    };
    // onCompromised: proper-lockfile's default throws in a timer once it notices.
    const opts = { realpath: false, lockfilePath: lockPath, stale: 5_000, onCompromised: () => {} };
    const a = lock(join(base, "a"), { ...opts, fs: slowFs });
    await aAtRmdir;
    // Contender B takes the stale lock over: B holds a fresh lock.
    const releaseB = await lock(join(base, "b"), opts);
    // A resumes: its rmdir removes B's fresh lock, and A locks too.
    resumeA();
    const releaseA = await a;
    // Two holders at once: the race the gate protocol closes.
    expect(typeof releaseA).toBe("function");
    expect(typeof releaseB).toBe("function");
    await releaseA();
    await releaseB().catch(() => undefined);
  });
});

describe("wall-clock steps (proper-lockfile PR #109)", () => {
  const tool = faketime === undefined ? "Date.now shifted" : "libfaketime";

  it(`clock set back an hour: a dead holder's lock, its mtime an hour ahead, frees after its staleness (${tool})`, async () => {
    const namespace = randomNamespace();
    // The holder ran an hour ahead of this process: seen from here, the clock was set back.
    const [holder] = await startWorkers(1, { directory: dir.path, namespace, clockOffsetMs: HOUR });
    await holder!.acquire("back", { ttlMs: TTL });
    const gate = filesOf(dir.path, namespace, "back").gate;
    // Wait for a refresh written with the holder's clock.
    await waitFor(() => statSync(gate).mtimeMs > Date.now() + HOUR / 2, {
      message: "an mtime refresh from the shifted clock",
    });
    holder!.kill("SIGKILL");
    await holder!.exited;
    const killedAt = performance.now();

    // proper-lockfile's own staleness check would call it held for an hour more.
    expect(await check(gate, { realpath: false, lockfilePath: gate, stale: TTL })).toBe(true);

    const lease = await client(namespace).acquire("back", { timeoutMs: TTL * 5 });
    expect(performance.now() - killedAt).toBeLessThan(TTL + CONFIRM_MS + 2_000);
    await lease.release();
  });

  it(`clock set forward an hour: a contender does not take over a live lock (${tool})`, async () => {
    const namespace = randomNamespace();
    const locks = client(namespace);
    const lease = await locks.acquire("forward", { ttlMs: TTL });
    // A contender an hour ahead sees the live holder's mtime an hour old.
    const [contender] = await startWorkers(1, {
      directory: dir.path,
      namespace,
      clockOffsetMs: HOUR,
    });
    const outcome = contender!.acquire("forward", {
      ttlMs: TTL,
      timeoutMs: TTL + CONFIRM_MS + 1_500,
    });
    await expect(outcome).rejects.toMatchObject({ code: "LOCK_TIMEOUT" });
    expect(lease.signal.aborted).toBe(false);
    await lease.release();
    await contender!.acquire("forward", { ttlMs: TTL, timeoutMs: 5_000 });
  });
});
