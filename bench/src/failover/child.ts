import { hostname } from "node:os";
import { type Backend, createLocks } from "@locks/core";

/*
 * One replica of the failover benchmark: it runs `locks.lead` on one key and
 * says on stdout when it is campaigning and when its `fn` starts (with the
 * term's token). The parent kills the leader with SIGKILL and times how long
 * the next replica takes to print LEADING.
 *
 * argv: <backend> <target> <key> <ttlMs>
 */
const [name, target, key, ttl] = process.argv.slice(2) as [string, string, string, string];

/** Only the backend under test is loaded: a replica starts as fast as a service using one backend. */
async function backendFor(backend: string, to: string): Promise<Backend> {
  switch (backend) {
    case "file":
      return (await import("@locks/file")).fileBackend({ directory: to });
    case "redis":
      return (await import("@locks/redis")).redisBackend({ url: to });
    case "etcd":
      return (await import("@locks/etcd")).etcdBackend({ hosts: to.split(",") });
    case "postgres":
      return (await import("@locks/postgres")).postgresBackend({ connectionString: to });
    case "mysql":
      return (await import("@locks/mysql")).mysqlBackend({ uri: to });
    default:
      throw new Error(`unknown backend ${backend}`);
  }
}

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
