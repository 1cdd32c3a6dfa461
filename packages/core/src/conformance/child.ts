/*
 * Entry point of a conformance child process: makes the backend from the
 * module the suite names, then obeys the suite's commands over IPC. It never
 * calls process.exit: after "close" it reports the resources still active
 * beyond those it had before the backend existed, then must exit by itself,
 * which proves the backend's close() left no handle open.
 */
import { pathToFileURL } from "node:url";
import type { Backend } from "../backend.js";
import type { Lease } from "../lease.js";
import { createLocks, type Locks } from "../locks.js";
import { History } from "./history.js";
import { CHILD_ENV, type ChildCommand, type ChildReply } from "./protocol.js";
import { activeResources, leftOver } from "./resources.js";

const modulePath = process.env[CHILD_ENV.module];
const namespace = process.env[CHILD_ENV.namespace];
if (modulePath === undefined || namespace === undefined) {
  throw new Error(`${CHILD_ENV.module} and ${CHILD_ENV.namespace} must be set`);
}

const held: Lease[] = [];
let ready!: (locks: Locks) => void;
const client = new Promise<Locks>((resolve) => {
  ready = resolve;
});

function reply(message: ChildReply): void {
  process.send?.(message);
}

async function run(command: ChildCommand): Promise<void> {
  const locks = await client;
  switch (command.type) {
    case "contend": {
      const history = new History();
      for (let i = 0; i < command.loops; i++) {
        const lease = await locks.acquire(command.key, { timeoutMs: 60_000 });
        const end = history.begin(lease, `pid${process.pid}`);
        await new Promise((resolve) => setImmediate(resolve));
        end();
        await lease.release();
      }
      reply({ type: "holds", holds: history.holds });
      return;
    }
    case "hold": {
      const lease = await locks.acquire(command.key, { ttlMs: command.ttlMs, timeoutMs: 60_000 });
      held.push(lease);
      reply({ type: "acquired", token: lease.fencingToken.toString() });
      return;
    }
    case "close": {
      await locks.close();
      reply({ type: "closed", leftOver: await leftOver(baseline, 2_000) });
      process.disconnect?.();
      return;
    }
  }
}

// Listening refs the IPC channel, which the baseline must include: it is the suite's, not the backend's.
process.on("message", (command: ChildCommand) => {
  run(command).catch((error: unknown) => reply({ type: "error", message: String(error) }));
});
const baseline = activeResources();
const { default: create } = (await import(pathToFileURL(modulePath).href)) as {
  default: () => Backend | Promise<Backend>;
};
ready(createLocks(await create(), { namespace }));
reply({ type: "ready" });
