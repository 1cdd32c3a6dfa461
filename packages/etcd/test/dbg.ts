import { createLocks } from "@locks/core";
import { etcdBackend } from "../src/index.js";

const hosts = [process.env.H ?? "127.0.0.1:23790"];
const ns = "h" + process.pid;
const clients = Array.from({ length: 8 }, () =>
  createLocks(etcdBackend({ hosts }), { namespace: ns, ttlMs: 30000 }),
);
let stop = false;
let last = -1;
let releasedAt = 0;
const gaps: number[] = [];
let relDone = 0;
const parts: number[][] = [];
let waiters: Array<() => void> = [];
const loops = clients.map(async (locks, me) => {
  while (!stop) {
    const lease = await locks.acquire("k");
    const now = performance.now();
    const g = globalThis as any;
    if (releasedAt && last !== me) {
      gaps.push(now - releasedAt);
      parts.push([
        g.__ev - releasedAt,
        g.__rs - g.__ev,
        g.__re - g.__rs,
        now - g.__re,
        relDone - releasedAt,
      ]);
    }
    last = me;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
    releasedAt = performance.now();
    await lease.release();
    relDone = performance.now();
    await new Promise<void>((res) => {
      const check = () => (stop || last !== me ? res() : waiters.push(check));
      check();
    });
  }
});
await new Promise((r) => setTimeout(r, 3000));
stop = true;
for (const f of waiters) f();
await Promise.all(loops);
gaps.sort((a, b) => a - b);
const q = (p: number) => gaps[Math.floor(gaps.length * p)]!.toFixed(2);
console.log("n", gaps.length, "p10", q(0.1), "p50", q(0.5), "p90", q(0.9));
const sorted = [...parts].sort((a, b) => a[0]! - b[0]!);
for (const f of [0.1, 0.3, 0.5, 0.7, 0.9])
  console.log(
    "ev,readStart,readRTT,grant,relDone",
    sorted[Math.floor(sorted.length * f)]!.map((x) => x.toFixed(2)).join(" "),
  );
await Promise.all(clients.map((c) => c.close()));
