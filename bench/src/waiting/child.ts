import { createInterface } from "node:readline";
import { createLocks, type Lease } from "@locks/core";
import { backendFor, epochNow } from "../backends.js";

/*
 * One process of waiters for the waiting suite: one Locks client over one
 * backend instance. Commands on stdin, one a line:
 *   wait <key> <n>  start n acquires of key; says "WAITING <n>" once all were called;
 *                   each grant is released at once and said as "GRANT <epoch ms>"
 *   abort           aborts every acquire still waiting; says "IDLE" once all settled
 *   exit            closes the client and exits
 *
 * argv: <backend> <target>
 */
const [name, target] = process.argv.slice(2) as [string, string];
const locks = createLocks(await backendFor(name, target), { namespace: "waiting" });
const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

// Connect (scripts loaded, session open) before any wait, as a running service would have.
await (await locks.acquire(`warm-${process.pid}`)).release();

let controllers: AbortController[] = [];
let pending: Promise<unknown>[] = [];

function startWaits(key: string, n: number): void {
  for (let i = 0; i < n; i++) {
    const controller = new AbortController();
    controllers.push(controller);
    pending.push(
      locks.acquire(key, { signal: controller.signal }).then(
        (lease: Lease) => {
          const at = epochNow();
          void lease.release();
          say(`GRANT ${at}`);
        },
        () => {},
      ),
    );
  }
  say(`WAITING ${n}`);
}

async function abortAll(): Promise<void> {
  for (const controller of controllers) controller.abort();
  await Promise.allSettled(pending);
  controllers = [];
  pending = [];
  say("IDLE");
}

const exit = (): void => {
  void locks.close().finally(() => process.exit(0));
};
createInterface({ input: process.stdin })
  .on("line", (line) => {
    const [command, key, n] = line.split(" ");
    if (command === "wait") startWaits(key!, Number(n));
    else if (command === "abort") void abortAll();
    else if (command === "exit") exit();
  })
  // The parent is gone: nobody will say exit.
  .on("close", exit);
say("READY");
