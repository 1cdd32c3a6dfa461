import { createLocks } from "@locks/core";
import { Etcd3 } from "etcd3";
import { etcdBackend } from "../src/index.js";

const hosts = ["127.0.0.1:23790"];
const mode = process.argv[2];
const key = "h" + process.pid;
type C = { acquire: () => Promise<() => Promise<unknown>>; close: () => Promise<void> };
const make = async (): Promise<C> => {
  if (mode === "ours") {
    const l = createLocks(etcdBackend({ hosts }), { namespace: "x", ttlMs: 30000 });
    return {
      acquire: async () => {
        const le = await l.acquire(key);
        return () => le.release();
      },
      close: () => l.close(),
    };
  }
  const c = new Etcd3({ hosts });
  const lease = c.lease(30);
  const id = await lease.grant();
  const k = Buffer.from(key);
  return {
    acquire: async () => {
      for (;;) {
        const r = await c.kv.txn({
          compare: [{ key: k, target: "Create", result: "Equal", create_revision: 0 }],
          success: [{ request_put: { key: k, value: Buffer.from("x"), lease: id } }],
          failure: [],
        });
        if (r.succeeded) return () => c.kv.deleteRange({ key: k });
        await new Promise((r) => setTimeout(r, 1));
      }
    },
    close: async () => {
      await lease.revoke();
      c.close();
    },
  };
};
const cs: C[] = [];
for (let i = 0; i < 8; i++) cs.push(await make());
let stop = false,
  last = -1,
  n = 0;
let waiters: Array<() => void> = [];
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const loops = cs.map(async (c, me) => {
  while (!stop) {
    const rel = await c.acquire();
    if (last !== me) n++;
    last = me;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
    await rel();
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
const cpu = process.cpuUsage(cpu0);
const el = performance.now() - t0;
console.log(
  mode,
  "handoffs/s",
  ((n * 1000) / el).toFixed(0),
  "cpu ms per handoff",
  ((cpu.user + cpu.system) / 1000 / n).toFixed(3),
);
await Promise.all(cs.map((c) => c.close()));
