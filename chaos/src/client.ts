/**
 * One chaos client process: loops acquire -> fenced write -> release until
 * the parent says stop, and reports every hold over IPC. The parent may
 * SIGSTOP or SIGKILL it at any time; it waits for the parent's "go" between
 * the grant and the write, so that a pause lands exactly there.
 */
import { type Backend, createLocks, isLockError } from "@locks/core";
import { History, historyNow } from "@locks/core/history";
import { fencedWrite } from "./fence.js";
import type {
  BackendSpec,
  ClientConfig,
  ClientMessage,
  ParentMessage,
  WriteOutcome,
} from "./protocol.js";

/** The backend, and what closes the client given to it (a backend never closes a given client). */
async function makeBackend(
  spec: BackendSpec,
): Promise<Backend | { backend: Backend; closeClient: () => void }> {
  switch (spec.kind) {
    case "file":
      return (await import("@locks/file")).fileBackend({ directory: spec.directory });
    case "redis":
      return (await import("@locks/redis")).redisBackend({ url: spec.url });
    case "redis-cluster": {
      const { Cluster } = await import("ioredis");
      // The options the backend asks of a given client: no lock command queued or replayed.
      const client = new Cluster([...spec.nodes], {
        enableOfflineQueue: false,
        redisOptions: { autoResendUnfulfilledCommands: false, maxRetriesPerRequest: 0 },
      });
      client.on("error", () => undefined);
      const backend = (await import("@locks/redis")).redisBackend({ client });
      return { backend, closeClient: () => client.disconnect() };
    }
    case "redlock":
      return (await import("@locks/redis")).redisBackend({ urls: [...spec.urls] });
    case "etcd":
      return (await import("@locks/etcd")).etcdBackend({ hosts: [...spec.hosts] });
    case "postgres":
      return (await import("@locks/postgres")).postgresBackend({
        connectionString: spec.connectionString,
      });
    case "mysql":
      return (await import("@locks/mysql")).mysqlBackend({
        uri: spec.uri,
        heartbeatMs: spec.heartbeatMs,
      });
  }
}

/**
 * historyNow() next to the machine-wide monotonic clock (process.hrtime, ms). Read between two
 * hrtime readings, several times, keeping the tightest: a process descheduled between two reads
 * (busy machine, other processes starting) would otherwise skew every time it reports.
 */
function timeBase(): { now: number; hr: number } {
  const hrMs = (): number => Number(process.hrtime.bigint()) / 1e6;
  let best = { now: 0, hr: 0, width: Number.POSITIVE_INFINITY };
  for (let i = 0; i < 20; i++) {
    const before = hrMs();
    const now = historyNow();
    const after = hrMs();
    if (after - before < best.width)
      best = { now, hr: (before + after) / 2, width: after - before };
  }
  return { now: best.now, hr: best.hr };
}

function send(message: ClientMessage): void {
  process.send?.(message);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env.CHAOS_CLIENT ?? "") as ClientConfig;
  const made = await makeBackend(config.backend);
  const backend = "closeClient" in made ? made.backend : made;
  const locks = createLocks(backend, {
    namespace: config.namespace,
    ttlMs: config.ttlMs,
  });
  let stopping = false;
  const goWaiters = new Map<number, () => void>();
  process.on("message", (raw: ParentMessage) => {
    if (raw.type === "stop") stopping = true;
    else goWaiters.get(raw.seq)?.();
  });
  process.on("disconnect", () => {
    stopping = true;
    for (const wake of goWaiters.values()) wake();
  });
  send({ type: "ready", ...timeBase() });

  for (let seq = 1; !stopping; seq++) {
    let lease: Awaited<ReturnType<typeof locks.acquire>>;
    try {
      lease = await locks.acquire(config.key, { timeoutMs: config.acquireTimeoutMs });
    } catch (error) {
      const code = isLockError(error) ? error.code : "OTHER";
      send({ type: "acquire-failed", code, message: String(error) });
      if (code !== "LOCK_TIMEOUT") await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const history = new History();
    const owner = `${config.clientId}#${seq}`;
    const end = history.begin(lease, owner);
    let lostLateMs: number | undefined;
    lease.signal.addEventListener(
      "abort",
      () => {
        if (isLockError(lease.signal.reason, "LOCK_LOST"))
          lostLateMs = Date.now() - (lease.expiresAt ?? Date.now());
      },
      { once: true },
    );
    const go = new Promise<void>((resolve) => goWaiters.set(seq, resolve));
    const token = lease.fencingToken.toString();
    send({ type: "acquired", seq, token, at: history.holds[0]?.acquiredAt ?? historyNow() });
    await go;
    goWaiters.delete(seq);
    // The write goes out whether or not the lease is still valid: the fence is what
    // must refuse it when it is stale (the client cannot check and write atomically).
    let write: WriteOutcome;
    try {
      const order = await fencedWrite(config.fenceUrl, config.fenceKey, token, owner);
      write =
        order > 0
          ? { accepted: true, order, ackAt: historyNow() }
          : { accepted: false, ackAt: historyNow() };
    } catch (error) {
      write = { accepted: null, ackAt: historyNow(), error: String(error) };
    }
    // Let timers that expired during a pause run (the watchdog's local deadline).
    await new Promise((r) => setTimeout(r, 1));
    end();
    await lease.release().catch(() => undefined);
    const record = history.holds[0];
    if (record !== undefined) send({ type: "hold", seq, record, write, lostLateMs });
  }
  await locks.close().catch(() => undefined);
  if ("closeClient" in made) made.closeClient();
  process.disconnect?.();
}

main().catch((error: unknown) => {
  console.error("chaos client failed:", error);
  process.exit(1);
});
