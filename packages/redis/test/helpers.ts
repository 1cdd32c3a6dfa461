import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { ChildDriver } from "@locks/testkit";
import { Redis } from "ioredis";
import { onTestFinished } from "vitest";
import type { WorkerCommand, WorkerReply } from "./fixtures/worker.js";

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

const workerModule = fileURLToPath(new URL("./fixtures/worker.ts", import.meta.url));

/** A lock client in another process (test/fixtures/worker.ts), killed when the test ends. */
export class Worker extends ChildDriver<WorkerCommand, WorkerReply> {
  constructor(env: Record<string, string>) {
    super(workerModule, { env });
  }
}
