import { createHook } from "node:async_hooks";
import { randomBytes } from "node:crypto";
import { LockChild } from "@locks/testkit";
import { Redis } from "ioredis";
import { onTestFinished } from "vitest";
import type { RedisBackendOptions } from "../src/index.js";

/** A fresh namespace per test: tests share servers and never wipe them. */
export function freshNamespace(): string {
  return `t-${randomBytes(6).toString("hex")}`;
}

/** The code of a rejection, or "resolved". */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (error) {
    return String((error as { code?: unknown }).code ?? error);
  }
}

/** A plain ioredis client for looking at the server, closed when the test ends. */
export function rawClient(url: string): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1 });
  client.on("error", () => undefined);
  onTestFinished(() => {
    client.disconnect();
  });
  return client;
}

const backendModule = new URL("../src/index.ts", import.meta.url);

/** A lock client over `redisBackend(options)` in another process, ready; killed when the test ends. */
export function startWorker(options: RedisBackendOptions, namespace: string): Promise<LockChild> {
  return LockChild.start({
    backend: { module: backendModule, export: "redisBackend", options },
    namespace,
  });
}

/** Async resource types that outlive a close() when something was not closed. */
const HANDLE_TYPES = new Set(["Timeout", "TCPWRAP", "TCPCONNECTWRAP"]);

/**
 * Records the timers and sockets created from now on (unref'd ones too, which
 * `process.getActiveResourcesInfo()` does not list); the function returned
 * lists those still open, once none is left or after `withinMs` (Node reports
 * a closed handle a moment later, from its own queue).
 */
export function trackHandles(): (withinMs?: number) => Promise<string[]> {
  const open = new Map<number, string>();
  const hook = createHook({
    init(id, type) {
      if (HANDLE_TYPES.has(type)) open.set(id, type);
    },
    destroy(id) {
      open.delete(id);
    },
  }).enable();
  onTestFinished(() => {
    hook.disable();
  });
  return async (withinMs = 1_000) => {
    const deadline = performance.now() + withinMs;
    while (open.size > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    return [...open.values()].sort();
  };
}

/** Keeps this thread busy for `ms` (a loaded machine, a long GC): no timer, no socket read runs meanwhile. */
export function blockEventLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy
  }
}
