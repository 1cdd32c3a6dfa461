/*
 * Entry point of a conformance child process: makes the backend from the
 * module the suite names, then obeys the suite's commands over IPC. It never
 * calls process.exit: after "close" it must exit by itself, which proves the
 * backend's close() left no handle open.
 */
import { pathToFileURL } from "node:url";
import type { Backend } from "../backend.js";
import { History } from "../history.js";
import type { Lease } from "../lease.js";
import { createLocks } from "../locks.js";
import { CHILD_ENV, type ChildCommand, type ChildReply } from "./protocol.js";

const modulePath = process.env[CHILD_ENV.module];
const namespace = process.env[CHILD_ENV.namespace];
if (modulePath === undefined || namespace === undefined) {
  throw new Error(`${CHILD_ENV.module} and ${CHILD_ENV.namespace} must be set`);
}
const { default: create } = (await import(pathToFileURL(modulePath).href)) as {
  default: () => Backend | Promise<Backend>;
};
const locks = createLocks(await create(), { namespace });
const held: Lease[] = [];

function reply(message: ChildReply): void {
  process.send?.(message);
}

async function run(command: ChildCommand): Promise<void> {
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
      process.disconnect?.();
      return;
    }
  }
}

process.on("message", (command: ChildCommand) => {
  run(command).catch((error: unknown) => reply({ type: "error", message: String(error) }));
});
reply({ type: "ready" });
