import { hostname } from "node:os";
import { createLocks } from "@locks/core";
import { backendFor } from "../backends.js";

/*
 * One replica of the failover benchmark: it runs `locks.lead` on one key and
 * says on stdout when it is campaigning and when its `fn` starts (with the
 * term's token). The parent kills the leader with SIGKILL and times how long
 * the next replica takes to print LEADING.
 *
 * argv: <backend> <target> <key> <ttlMs>
 */
const [name, target, key, ttl] = process.argv.slice(2) as [string, string, string, string];

const locks = createLocks(await backendFor(name, target), {
  namespace: "failover",
  ttlMs: Number(ttl),
});
const holder = `${hostname()}:${process.pid}`;
// Connect (and load scripts, open the session) before campaigning, as a running service would have.
await (await locks.acquire(`warm-${process.pid}`)).release();
process.stdout.write("CAMPAIGNING\n");
await locks.lead(
  key,
  async (term) => {
    process.stdout.write(`LEADING ${term.fencingToken}\n`);
    // Leads until killed (or until the term is lost, then campaigns again).
    await new Promise((resolve) => term.signal.addEventListener("abort", resolve));
    process.stdout.write(`LOST ${term.fencingToken} ${String(term.signal.reason)}\n`);
  },
  { holder },
);
