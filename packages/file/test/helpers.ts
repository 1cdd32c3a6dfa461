import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequest } from "@locks/core/backend";
import { LockChild } from "@locks/testkit";
import { type KeyFiles, keyFiles } from "../src/names.js";

/** A fresh lock directory under the system's temp directory; removed by the returned function. */
export function tempDirectory(label: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `locks-file-${label}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export function randomNamespace(): string {
  return `t-${randomBytes(6).toString("hex")}`;
}

export { faketime } from "@locks/testkit";

export interface WorkerOptions {
  readonly directory: string;
  readonly namespace: string;
  /**
   * Runs the worker with its wall clock shifted by this many ms: under
   * libfaketime when installed (monotonic clock untouched), otherwise by
   * shifting Date.now() inside the worker.
   */
  readonly clockOffsetMs?: number;
}

const backendModule = new URL("../src/index.ts", import.meta.url);
const setup = new URL("./fixtures/failpoints.ts", import.meta.url);

/** Starts `n` lock clients in other OS processes, each ready; killed when the test ends. */
export function startWorkers(n: number, options: WorkerOptions): Promise<LockChild[]> {
  return LockChild.startMany(n, {
    backend: {
      module: backendModule,
      export: "fileBackend",
      options: { directory: options.directory },
    },
    namespace: options.namespace,
    setup,
    ...(options.clockOffsetMs === undefined ? {} : { clockOffsetMs: options.clockOffsetMs }),
  });
}

/** The files of `key` of `namespace` under `directory`, as the backend names them. */
export function filesOf(directory: string, namespace: string, key: string): KeyFiles {
  return keyFiles(directory, createRequest({ key, namespace }));
}
