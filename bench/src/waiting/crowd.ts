import { createLocks, type Lease } from "@locks/core";
import { backendFor } from "../backends.js";
import { processCpuUs } from "../harness.js";

/*
 * Many waiters on one key in one client (run with --expose-gc): for each
 * crowd size, the heap per waiter (without a signal, and with one: an
 * AbortController per waiter, as the aborts need), the CPU of aborting one waiter in the
 * middle of the queue, and the CPU per handoff while the crowd waits. CPU is
 * this process's plus the server's (`serverPid`, 0 for none). Prints one JSON
 * line per size.
 *
 * argv: <backend> <target> <serverPid> <size>...
 */
const [name, target, serverPid, ...sizes] = process.argv.slice(2) as [string, string, string];
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --expose-gc");
const ABORTS = 20;
const HANDOFFS = 50;
const SETTLE_MS = name === "thread" ? 200 : 3_000;

const locks = createLocks(await backendFor(name, target), {
  namespace: "crowd",
  ttlMs: 600_000,
});
await (await locks.acquire(`warm-${process.pid}`)).release();

function cpuUs(): number {
  const own = process.cpuUsage();
  const server = Number(serverPid) > 0 ? (processCpuUs(Number(serverPid)) ?? 0) : 0;
  return own.user + own.system + server;
}

function heapAfterGc(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * What this harness itself keeps per waiter: a handler promise on the
 * acquire's promise (and, `withSignal`, an AbortController).
 */
function harnessBytes(n: number, withSignal: boolean): number {
  const pending = new Promise(() => {});
  const before = heapAfterGc();
  const kept: unknown[] = [];
  for (let i = 0; i < n; i++) {
    if (withSignal) kept.push(new AbortController());
    kept.push(pending.then(noop, noop));
  }
  const bytes = (heapAfterGc() - before) / n;
  kept.length = 0;
  return bytes;
}

function noop(): void {}

/** Heap per waiter without a signal: waiters of a client of their own, rejected by its close(). */
async function heapWithoutSignal(size: number): Promise<number> {
  const own = createLocks(await backendFor(name, target), { namespace: "crowd", ttlMs: 600_000 });
  const key = `plain-${size}-${process.pid}`;
  await own.acquire(key, { autoExtend: false });
  const harness = harnessBytes(size, false);
  const heapBefore = heapAfterGc();
  const waits: Promise<unknown>[] = [];
  for (let i = 0; i < size; i++) waits.push(own.acquire(key).then(noop, noop));
  await sleep(SETTLE_MS);
  const bytes = (heapAfterGc() - heapBefore) / size - harness;
  await own.close();
  await Promise.all(waits);
  return bytes;
}

for (const size of sizes.map(Number)) {
  const key = `crowd-${size}-${process.pid}`;
  const heapPlain = await heapWithoutSignal(size);
  const holder = await locks.acquire(key, { autoExtend: false });
  const harness = harnessBytes(size, true);
  const heapBefore = heapAfterGc();
  const controllers: AbortController[] = [];
  const waits: Promise<void>[] = [];
  let grants = 0;
  let onGrant: () => void = () => {};
  for (let i = 0; i < size; i++) {
    const controller = new AbortController();
    controllers.push(controller);
    waits.push(
      locks.acquire(key, { signal: controller.signal }).then(
        (lease: Lease) => {
          grants++;
          onGrant();
          void lease.release();
        },
        () => {},
      ),
    );
  }
  await sleep(SETTLE_MS); // every wait made its first attempt
  const heapPerWaiter = (heapAfterGc() - heapBefore) / size - harness;

  // Aborts of waiters in the middle of the queue, one at a time.
  const middle = Math.floor(size / 2) - ABORTS / 2;
  let cpu = cpuUs();
  for (let i = middle; i < middle + ABORTS; i++) {
    controllers[i]!.abort();
    await waits[i];
  }
  const abortCpuUs = (cpuUs() - cpu) / ABORTS;

  // Handoffs: the holder releases, each waiter releases at once on its grant.
  let handoffCpuUs = Number.NaN;
  const done = new Promise<void>((resolve) => {
    onGrant = () => {
      if (grants === HANDOFFS) {
        handoffCpuUs = (cpuUs() - cpu) / HANDOFFS;
        resolve();
      }
    };
  });
  cpu = cpuUs();
  await holder.release();
  await done;
  for (const controller of controllers) controller.abort();
  await Promise.all(waits);
  process.stdout.write(
    `${JSON.stringify({ size, heapPlain, heapPerWaiter, abortCpuUs, handoffCpuUs })}\n`,
  );
}
await locks.close();
