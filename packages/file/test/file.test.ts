/*
 * What is specific to the file system: where keys land, the lock directory's
 * creation and errors, the fencing counter's files, the directory watch, and
 * the protocol's corner states. Multi-process faults are in faults.test.ts.
 */

import { createHook } from "node:async_hooks";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { type Backend, createLocks, isLockError, type Locks } from "@locks/core";
import { createRequest } from "@locks/core/backend";
import { waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { bootId } from "../src/boot.js";
import { failpoints } from "../src/failpoints.js";
import { RESERVE_BLOCK } from "../src/fence.js";
import { type FileBackendOptions, fileBackend } from "../src/index.js";
import { encodeRecord, parseRecord } from "../src/record.js";
import { MIN_STALE_MS } from "../src/store.js";
import { filesOf, randomNamespace, startWorkers, tempDirectory } from "./helpers.js";

const dir = tempDirectory("unit");
afterAll(() => dir.remove());

function backend(options: Partial<FileBackendOptions> = {}): Backend {
  const made = fileBackend({ directory: dir.path, ...options });
  onTestFinished(() => made.close());
  return made;
}

function client(namespace: string, options: Partial<FileBackendOptions> = {}): Locks {
  const locks = createLocks(backend(options), { namespace });
  onTestFinished(() => locks.close());
  return locks;
}

const NAME = /^[a-z0-9_-]{1,24}-[0-9a-f]{64}\.(lock|fence|reserve|h)$/;

describe("keys and file names", () => {
  it("no key names a path outside the directory, and every name is [a-z0-9_-] plus a hash", async () => {
    const root = join(dir.path, `keys-${randomNamespace()}`);
    const lockDir = join(root, "locks");
    const locks = createLocks(fileBackend({ directory: lockDir }), { namespace: "ns" });
    onTestFinished(() => locks.close());
    const keys = [
      "../../etc/passwd",
      "..",
      ".",
      "/etc/passwd",
      "C:\\Windows\\system32",
      "a/b/../../../c",
      "nul\u0000byte",
      "\u202Eright-to-left",
      "Key",
      "key",
      "KEY",
      "caf\u00e9",
      "cafe\u0301",
      "x".repeat(1024),
      "é".repeat(512),
      " ",
      "*",
      "~",
    ];
    const leases = [];
    for (const key of keys) {
      const lease = await locks.tryAcquire(key);
      expect(lease, JSON.stringify(key.slice(0, 16))).not.toBeNull();
      leases.push(lease!);
    }
    // Case variants, Unicode normal forms and long keys are all distinct files.
    const stems = new Set(keys.map((k) => filesOf(lockDir, "ns", k).stem));
    expect(stems.size).toBe(keys.length);
    // Nothing was created next to the lock directory, and everything in it is ours.
    expect(readdirSync(root)).toEqual(["locks"]);
    for (const name of readdirSync(lockDir)) {
      if (name === ".tmp") continue;
      expect(name).toMatch(NAME);
      expect(name.length).toBeLessThan(255);
    }
    await Promise.all(leases.map((l) => l.release()));
  });

  it("keys are measured in UTF-8 bytes, and lone surrogates are refused, before any file is made", async () => {
    const root = join(dir.path, `bytes-${randomNamespace()}`);
    const locks = createLocks(fileBackend({ directory: root }), { namespace: "ns" });
    onTestFinished(() => locks.close());
    // 400 three-byte characters: 1200 bytes, though only 400 UTF-16 code units.
    for (const key of ["中".repeat(400), "😀".repeat(257), "k\uD800", "k\uDC00x"]) {
      const label = `${key.slice(0, 4)}… (${key.length} code units)`;
      expect(await locks.tryAcquire(key).catch((e) => e.code), label).toBe("INVALID_ARGUMENT");
      expect(await locks.acquire(key, { timeoutMs: 1_000 }).catch((e) => e.code), label).toBe(
        "INVALID_ARGUMENT",
      );
    }
    expect(() => createLocks(fileBackend({ directory: root }), { namespace: "x\uD800" })).toThrow(
      /namespace/,
    );
    expect(() => lstatSync(root)).toThrow(/ENOENT/);
    // 341 three-byte characters (1023 bytes) and 256 four-byte ones (1024) are keys.
    for (const key of ["中".repeat(341), "😀".repeat(256)]) {
      const lease = await locks.tryAcquire(key);
      expect(lease).not.toBeNull();
      await lease!.release();
    }
  });

  it("namespaces are part of the name", () => {
    expect(filesOf(dir.path, "a:b", "c").stem).not.toBe(filesOf(dir.path, "a", "b:c").stem);
    expect(filesOf(dir.path, "a", "k").stem).toBe(filesOf(dir.path, "a", "k").stem);
  });
});

describe("the lock directory", () => {
  it("is created on first use with mode 0700, parents included", async () => {
    const path = join(dir.path, `new-${randomNamespace()}`, "a", "b");
    const locks = createLocks(fileBackend({ directory: path }));
    onTestFinished(() => locks.close());
    const lease = await locks.acquire("k");
    expect(statSync(path).mode & 0o777).toBe(0o700);
    await lease.release();
  });

  it("honours directoryMode", async () => {
    const path = join(dir.path, `mode-${randomNamespace()}`);
    const locks = createLocks(fileBackend({ directory: path, directoryMode: 0o750 }));
    onTestFinished(() => locks.close());
    await (await locks.acquire("k")).release();
    expect(statSync(path).mode & 0o777).toBe(0o750 & ~process.umask());
  });

  it("rejects with BACKEND_UNAVAILABLE when it cannot be created or written (even as root)", async () => {
    const file = join(dir.path, `plain-file-${randomNamespace()}`);
    writeFileSync(file, "not a directory");
    const locks = createLocks(fileBackend({ directory: join(file, "locks") }));
    onTestFinished(() => locks.close());
    for (const attempt of [() => locks.acquire("k"), () => locks.tryAcquire("k")]) {
      const error = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isLockError(error, "BACKEND_UNAVAILABLE"), String(error)).toBe(true);
      expect((error as { cause?: { code?: string } }).cause?.code).toBe("ENOTDIR");
    }
  });

  it("refuses bad options synchronously, before any I/O", () => {
    const bad: unknown[] = [
      undefined,
      {},
      { directory: "" },
      { directory: 42 },
      { directory: "/tmp/x\u0000y" },
      { directory: "/tmp/x", directoryMode: -1 },
      { directory: "/tmp/x", directoryMode: 1.5 },
      { directory: "/tmp/x", io: "fast" },
      { directory: "/tmp/x", stale: 10 },
    ];
    for (const options of bad) {
      let error: unknown;
      try {
        fileBackend(options as FileBackendOptions);
      } catch (e) {
        error = e;
      }
      expect(isLockError(error, "INVALID_ARGUMENT"), JSON.stringify(options)).toBe(true);
    }
  });

  it("recreates a lock directory removed while in use", async () => {
    const path = join(dir.path, `removed-${randomNamespace()}`);
    const locks = createLocks(fileBackend({ directory: path }));
    onTestFinished(() => locks.close());
    await (await locks.acquire("k")).release();
    rmSync(path, { recursive: true });
    const lease = await locks.acquire("k");
    await lease.release();
  });
});

describe("the gate", () => {
  it("holds exactly one owner record while held, and nothing is left after release", async () => {
    const namespace = randomNamespace();
    const locks = client(namespace);
    const files = filesOf(dir.path, namespace, "one");
    const lease = await locks.acquire("one");
    const entries = readdirSync(files.gate);
    expect(entries).toHaveLength(1);
    const record = parseRecord(readlinkSync(join(files.gate, entries[0]!)));
    expect(record?.token).toBe(lease.fencingToken);
    expect(record?.pid).toBe(process.pid);
    await lease.release();
    expect(() => lstatSync(files.gate)).toThrow(/ENOENT/);
    // The record moved to the fence: the counter.
    expect(parseRecord(readlinkSync(files.fence))?.token).toBe(lease.fencingToken);
  });

  it("an empty gate left by a process that died creating or releasing it is removed once stale", async () => {
    const namespace = randomNamespace();
    const files = filesOf(dir.path, namespace, "empty");
    mkdirSync(dirname(files.gate), { recursive: true });
    mkdirSync(files.gate);
    const locks = client(namespace);
    // Busy at first: an empty gate is one being created or released.
    expect(await locks.tryAcquire("empty", { ttlMs: MIN_STALE_MS })).toBeNull();
    const started = performance.now();
    const lease = await locks.acquire("empty", { ttlMs: MIN_STALE_MS, timeoutMs: 10_000 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(MIN_STALE_MS * 0.9);
    await lease.release();
  });

  it("a creator paused between mkdir and its record past the confirmation withdraws; the gate taken over meanwhile keeps its one holder", async () => {
    const namespace = randomNamespace();
    const late = backend();
    const other = client(namespace);
    let resume = (): void => undefined;
    const resumed = new Promise<void>((resolve) => (resume = resolve));
    let reached = (): void => undefined;
    const pausing = new Promise<void>((resolve) => (reached = resolve));
    failpoints.afterGateMade = async () => {
      failpoints.afterGateMade = undefined;
      reached();
      await resumed;
    };
    onTestFinished(() => {
      failpoints.afterGateMade = undefined;
      resume();
    });
    const attempt = late.tryAcquire(createRequest({ key: "late", namespace, ttlMs: MIN_STALE_MS }));
    await pausing;
    // Its empty gate stays unchanged past the confirmation: removed as abandoned, then taken.
    const lease = await other.acquire("late", { ttlMs: MIN_STALE_MS, timeoutMs: 10_000 });
    resume();
    expect((await attempt).granted).toBe(false);
    const files = filesOf(dir.path, namespace, "late");
    const entries = readdirSync(files.gate);
    expect(entries).toHaveLength(1);
    expect(parseRecord(readlinkSync(join(files.gate, entries[0]!)))?.token).toBe(
      lease.fencingToken,
    );
    expect(lease.signal.aborted).toBe(false);
    await lease.release();
  });

  it("something other than a directory at a gate's path (a dangling symlink, a file) fails the key with BACKEND_UNAVAILABLE", async () => {
    const namespace = randomNamespace();
    const locks = client(namespace);
    await (await locks.acquire("made")).release();
    const cases: Array<[string, (path: string) => void]> = [
      ["dangling symlink", (path) => symlinkSync(join(dir.path, "nowhere"), path)],
      ["regular file", (path) => writeFileSync(path, "")],
    ];
    for (const [what, plant] of cases) {
      const key = what.replace(/ /g, "-");
      plant(filesOf(dir.path, namespace, key).gate);
      expect(await locks.tryAcquire(key).catch((e) => e.code), what).toBe("BACKEND_UNAVAILABLE");
      // Refused at the first attempt, not polled until the timeout.
      const started = performance.now();
      const refused = await locks.acquire(key, { timeoutMs: 20_000 }).catch((e) => e);
      expect(refused.code, what).toBe("BACKEND_UNAVAILABLE");
      expect(String(refused.message), what).toMatch(/not a directory this backend made/);
      expect(performance.now() - started, what).toBeLessThan(10_000);
      unlinkSync(filesOf(dir.path, namespace, key).gate);
      await (await locks.acquire(key, { timeoutMs: 10_000 })).release();
    }
  });

  it("a stranger's release (a clean-up by owner) never touches the holder's lock; an ended hold extends no more", async () => {
    const namespace = randomNamespace();
    const a = backend();
    const request = () => createRequest({ key: "owned", namespace, ttlMs: 5_000 });
    const mine = request();
    const granted = await a.tryAcquire(mine);
    expect(granted.granted).toBe(true);
    const hold = granted.granted ? granted.hold : undefined;
    // A stranger has no hold: its clean-up by owner finds nothing of its own.
    await backend().release(request(), undefined);
    expect((await backend().tryAcquire(request())).granted).toBe(false);
    expect(await a.extend(mine, hold, 5_000)).toBe(true);
    await a.release(mine, hold);
    expect(await a.extend(mine, hold, 5_000)).toBe(false);
  });

  it("inspect() shows the holders of a key", async () => {
    const namespace = randomNamespace();
    const locks = client(namespace);
    const b = backend();
    const ref = (key: string) => createRequest({ key, namespace });
    expect(await b.inspect!(ref("seen"))).toEqual({ holders: [] });
    const lease = await locks.acquire("seen", { ttlMs: 5_000 });
    const status = await b.inspect!(ref("seen"));
    expect(status.holders).toHaveLength(1);
    expect(status.holders[0]).toMatchObject({
      holder: undefined,
      mode: "exclusive",
      fencingToken: lease.fencingToken,
    });
    await lease.release();
    const readers = [
      await locks.acquire("shared", { mode: "shared" }),
      await locks.acquire("shared", { mode: "shared" }),
    ];
    expect((await b.inspect!(ref("shared"))).holders.map((h) => h.mode)).toEqual([
      "shared",
      "shared",
    ]);
    await Promise.all(readers.map((r) => r.release()));
  });

  it("a record taken out of the gate under its holder: the next refresh reports the loss (host.lost), lease.signal aborts long before the TTL", async () => {
    const namespace = randomNamespace();
    const locks = client(namespace);
    const lease = await locks.acquire("taken", { ttlMs: 60_000 });
    const files = filesOf(dir.path, namespace, "taken");
    // What a takeover does: claim the record (rename it to the fence), remove the empty gate.
    const [record] = readdirSync(files.gate);
    renameSync(join(files.gate, record!), files.fence);
    rmdirSync(files.gate);
    await waitFor(() => lease.signal.aborted, { message: "the loss reported" });
    expect(lease.signal.reason).toMatchObject({ code: "LOCK_LOST" });
    expect(String(lease.signal.reason.message)).toMatch(/taken over or removed/);
    const next = await client(namespace).acquire("taken", { timeoutMs: 10_000 });
    await lease.release();
    expect(await client(namespace).tryAcquire("taken")).toBeNull();
    await next.release();
  });

  it("a hold the core never extends (no lease) is freed at its TTL while its process lives", async () => {
    const namespace = randomNamespace();
    const a = backend();
    const request = createRequest({ key: "unextended", namespace, ttlMs: MIN_STALE_MS });
    const granted = await a.tryAcquire(request);
    expect(granted.granted).toBe(true);
    const hold = granted.granted ? granted.hold : undefined;
    const { gate } = filesOf(dir.path, namespace, "unextended");
    // Refreshed once a second until the TTL, then the refresh ends the hold.
    await waitFor(() => !existsSync(gate), { message: "the gate removed", timeoutMs: 10_000 });
    expect(await a.extend(request, hold, MIN_STALE_MS)).toBe(false);
    await a.release(request, hold);
    const next = await client(namespace).tryAcquire("unextended");
    expect(next).not.toBeNull();
    await next!.release();
  });

  it("a lease released before its minHoldMs keeps the key until then, and no longer (the refresh stops)", async () => {
    const namespace = randomNamespace();
    const lease = await client(namespace).acquire("minimum", { minHoldMs: 3_000 });
    await lease.release();
    const other = client(namespace);
    expect(await other.tryAcquire("minimum")).toBeNull();
    // Refreshed for ever, the key would never be granted.
    const next = await other.acquire("minimum", { timeoutMs: 15_000 });
    await next.release();
  });

  it("a process that exits while holding frees its keys at once (proper-lockfile's exit handler)", async () => {
    const namespace = randomNamespace();
    const [worker] = await startWorkers(1, { directory: dir.path, namespace });
    const held = await worker!.acquire("exit", { ttlMs: 60_000 });
    await worker!.exit();
    const lease = await client(namespace).tryAcquire("exit");
    expect(lease).not.toBeNull();
    expect(lease!.fencingToken > BigInt(held.token)).toBe(true);
    await lease!.release();
  });
});

describe("fencing counter", () => {
  it("continues across backend instances (process restarts) and survives in files", async () => {
    const namespace = randomNamespace();
    let last = 0n;
    for (let i = 0; i < 3; i++) {
      const locks = createLocks(fileBackend({ directory: dir.path }), { namespace });
      const lease = await locks.acquire("restart");
      expect(lease.fencingToken > last).toBe(true);
      last = lease.fencingToken;
      await locks.close();
    }
    const files = filesOf(dir.path, namespace, "restart");
    // A durable reservation covers every token granted so far.
    expect(BigInt(readFileSync(files.reserve, "utf8").trim()) >= last).toBe(true);
  });

  it("after a reboot (another boot id) counting restarts above the durable reservation", async () => {
    const namespace = randomNamespace();
    const files = filesOf(dir.path, namespace, "reboot");
    const locks = client(namespace);
    await (await locks.acquire("reboot")).release();
    // What a crash could leave: a fence written before the reboot that lost later grants.
    const reserved = BigInt(readFileSync(files.reserve, "utf8").trim());
    unlinkSync(files.fence);
    symlinkSync(
      encodeRecord({
        token: 1n,
        reserved,
        boot: "00000000-0000-0000-0000-000000000000",
        staleMs: 2_000,
        registry: false,
        pid: 1,
        purpose: "x",
        holder: undefined,
      }),
      files.fence,
    );
    const lease = await locks.acquire("reboot");
    expect(lease.fencingToken).toBe(reserved + 1n);
    await lease.release();
    expect(BigInt(readFileSync(files.reserve, "utf8").trim())).toBe(
      reserved + (bootId() === "" ? 1n : RESERVE_BLOCK),
    );
  });

  it("reserves a block of tokens durably, not one fsync per grant", async () => {
    const namespace = randomNamespace();
    const files = filesOf(dir.path, namespace, "block");
    const locks = client(namespace);
    const first = await locks.acquire("block");
    await first.release();
    const reserve = statSync(files.reserve);
    for (let i = 0; i < 20; i++) await (await locks.acquire("block")).release();
    if (bootId() !== "") {
      // Same inode, same content: no rewrite within the block.
      expect(statSync(files.reserve).ino).toBe(reserve.ino);
    }
  });
});

describe("the directory watch", () => {
  /** How many inotify watches this process has on `path` (Linux). */
  async function watchesOn(path: string): Promise<number> {
    const ino = statSync(path).ino.toString(16);
    let count = 0;
    for (const fd of await readdir("/proc/self/fd")) {
      let info: string;
      try {
        if (!readlinkSync(`/proc/self/fd/${fd}`).includes("inotify")) continue;
        info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
      } catch {
        continue;
      }
      count += info
        .split("\n")
        .filter((l) => l.startsWith("inotify ") && l.includes(` ino:${ino} `)).length;
    }
    return count;
  }

  it("a watch that cannot be opened says unsure (the core polls), and changed once it is open again", async () => {
    const path = join(dir.path, `unwatched-${randomNamespace()}`);
    const made = backend({ directory: path });
    const events: Array<string | undefined> = [];
    // No directory yet: fs.watch fails, so changes may go unseen.
    const unsubscribe = await made.subscribe!(createRequest({ key: "k" }), (event) => {
      events.push(event ?? "changed");
    });
    onTestFinished(() => unsubscribe());
    expect(events).toEqual(["unsure"]);
    mkdirSync(path);
    await waitFor(() => events.length > 1, { message: "the watch opened again" });
    expect(events[1]).toBe("changed");
  });

  it.skipIf(process.platform !== "linux")(
    "one watch per backend instance, shared by all its waiters, closed when nobody waits",
    async () => {
      const path = join(dir.path, `watch-${randomNamespace()}`);
      const holder = createLocks(fileBackend({ directory: path }));
      const waiter = createLocks(fileBackend({ directory: path }));
      onTestFinished(async () => {
        await holder.close();
        await waiter.close();
      });
      const held = await Promise.all(["a", "b", "c"].map((k) => holder.acquire(k)));
      // Count the fs.watch handles made while four waiters wait on three keys.
      let watchers = 0;
      const hook = createHook({
        init(_id, type) {
          if (type === "FSEVENTWRAP") watchers++;
        },
      }).enable();
      onTestFinished(() => {
        hook.disable();
      });
      const waiting = ["a", "b", "c", "a"].map((k) => waiter.acquire(k, { timeoutMs: 10_000 }));
      await waitFor(async () => (await watchesOn(path)) === 1, { message: "one watch" });
      hook.disable();
      expect(watchers).toBe(1);
      await Promise.all(held.map((l) => l.release()));
      const first = await Promise.all(waiting.slice(0, 3));
      await Promise.all(first.map((l) => l.release()));
      await (await waiting[3]!).release();
      expect(await watchesOn(path)).toBe(0);

      // close() stops a watch that waiters still use.
      const blocker = await holder.acquire("d");
      const pending = waiter.acquire("d").catch((e: unknown) => e);
      await waitFor(async () => (await watchesOn(path)) === 1, { message: "one watch" });
      await waiter.close();
      expect(isLockError(await pending, "LOCK_CLOSED")).toBe(true);
      expect(await watchesOn(path)).toBe(0);
      await blocker.release();
    },
  );
});
