import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LockChild, type LockChildOptions } from "../src/index.js";

// The file backend: no server to start, and it works across processes.
const directory = mkdtempSync(join(tmpdir(), "locks-testkit-child-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

function options(more: Partial<LockChildOptions> = {}): LockChildOptions {
  return {
    backend: {
      module: new URL("../../file/src/index.ts", import.meta.url),
      export: "fileBackend",
      options: { directory },
    },
    namespace: `t-${Math.random().toString(36).slice(2)}`,
    setup: new URL("./fixtures/child-setup.ts", import.meta.url),
    ...more,
  };
}

describe("LockChild", () => {
  it("acquires, tries, releases and contends across two processes; each exits by itself after close()", async () => {
    const [a, b] = await LockChild.startMany(2, options());
    const held = await a!.acquire("k", { ttlMs: 5_000 });
    expect(held.token).toBeTypeOf("bigint");
    expect(await b!.tryAcquire("k")).toBeNull();
    await a!.release(held);
    const next = await b!.tryAcquire("k");
    expect(next!.token > held.token).toBe(true);
    await b!.release();
    const runs = await Promise.all([a!, b!].map((c) => c.contend("c", { loops: 20, tasks: 2 })));
    expect(runs.flat()).toHaveLength(80);
    expect(await a!.close()).toBe(0);
    expect(await b!.close()).toBe(0);
  });

  it("a failed command rejects with the child's error code", async () => {
    const [a, b] = await LockChild.startMany(2, options());
    await a!.acquire("k");
    await expect(b!.acquire("k", { timeoutMs: 50 })).rejects.toMatchObject({
      code: "LOCK_TIMEOUT",
    });
    await expect(b!.call("nonsense")).rejects.toThrow(/unknown command/);
  });

  it("a setup module adds commands and events", async () => {
    const child = await LockChild.start(options());
    expect(await child.call("echo", { x: 1n })).toEqual({ x: 1n });
    await child.call("announce", "hello");
    expect(child.has("announced")).toBe(true);
    expect((await child.next("announced")).what).toBe("hello");
    await expect(child.next("announced", 50)).rejects.toThrow(/no "announced" event/);
  });

  it("a child that cannot build its backend fails start() and is ended", async () => {
    const spec = options().backend;
    await expect(
      LockChild.start(options({ backend: { ...spec, export: "noSuchBackend" } })),
    ).rejects.toThrow(/exports no function "noSuchBackend"/);
  });

  it("a frozen child that misses a reply's deadline is ended (SIGTERM, then SIGKILL)", async () => {
    const child = await LockChild.start(options({ replyTimeoutMs: 300, killAfterMs: 100 }));
    child.kill("SIGSTOP");
    await expect(child.call("echo", 1)).rejects.toThrow(/no reply to echo .* killed it/);
    await child.exited;
    expect(child.process.signalCode).not.toBeNull();
  });

  it("exit() runs exit handlers, crash() does not; commands after that fail at once", async () => {
    const [exiting, crashing] = await LockChild.startMany(2, options());
    expect(await exiting!.exit(3)).toBe(3);
    expect(await crashing!.crash()).toBeNull();
    expect(crashing!.process.signalCode).toBe("SIGKILL");
    await expect(crashing!.call("echo", 1)).rejects.toThrow(/has exited/);
  });

  let leftRunning: LockChild | undefined;
  it("(starts a child and leaves it running)", async () => {
    leftRunning = await LockChild.start(options());
    leftRunning.kill("SIGSTOP");
    void leftRunning.acquire("never-answered");
  });

  it("a child still running when its test ends is killed", async () => {
    expect(leftRunning).toBeDefined();
    await leftRunning!.exited;
    expect(leftRunning!.process.signalCode).toBe("SIGKILL");
  });
});
