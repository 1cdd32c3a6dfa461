import { type KeyStatus, type Locks, validateKey } from "@locks/core";
import { parseStatusArgs, type StatusArgs } from "./args.js";
import { describeBackend } from "./backends.js";
import { closeLocks, openLocks } from "./client.js";
import { formatDuration } from "./duration.js";
import { ExitCode } from "./exit-codes.js";
import { STATUS_HELP } from "./help.js";

/** TTL of the probe lease where the backend cannot inspect: short, so a crash mid-probe costs little. */
const PROBE_TTL_MS = 5_000;

/** `locks status`: prints whether the key is held; exit 0 free, 1 held. */
export async function status(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseStatusArgs(argv, env);
  if (args === "help") {
    process.stdout.write(STATUS_HELP);
    return 0;
  }
  validateKey(args.key);
  const locks = await openLocks(args);
  try {
    const { result, detailed } = await readKeyStatus(locks, args.key);
    print(args, locks.namespace, result, detailed);
    return result.held ? ExitCode.held : 0;
  } finally {
    await closeLocks(locks);
  }
}

/**
 * Who holds `key`: the backend's `inspect` where it has one (`detailed`),
 * else a probe that takes the key for an instant and lets it go, so "held"
 * then means an exclusive acquire would have to wait, and holders are unknown.
 */
export async function readKeyStatus(
  locks: Locks,
  key: string,
): Promise<{ result: KeyStatus; detailed: boolean }> {
  const backend = locks.backend;
  if (backend.inspect !== undefined) {
    return { result: await backend.inspect(locks.namespace, key), detailed: true };
  }
  const lease = await locks.tryAcquire(key, { ttlMs: PROBE_TTL_MS, autoExtend: false });
  await lease?.release();
  return { result: { held: lease === null, holders: [] }, detailed: false };
}

function print(args: StatusArgs, namespace: string, result: KeyStatus, detailed: boolean): void {
  if (args.quiet) return;
  if (args.json) {
    const holders = result.holders.map((h) => ({
      ...(h.owner === undefined ? {} : { owner: h.owner }),
      ...(h.mode === undefined ? {} : { mode: h.mode }),
      ...(h.fencingToken === undefined ? {} : { fencingToken: h.fencingToken.toString() }),
      ...(h.expiresInMs === undefined ? {} : { expiresInMs: h.expiresInMs }),
    }));
    const out = {
      key: args.key,
      namespace,
      backend: args.backend.kind,
      held: result.held,
      ...(detailed ? { holders } : {}),
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  const where = `namespace ${JSON.stringify(namespace)}, ${describeBackend(args.backend)}`;
  if (!result.held) {
    process.stdout.write(`free: ${JSON.stringify(args.key)} (${where})\n`);
    return;
  }
  process.stdout.write(`held: ${JSON.stringify(args.key)} (${where})\n`);
  if (!detailed) {
    process.stdout.write("  this backend cannot tell by whom\n");
    return;
  }
  for (const holder of result.holders) {
    const parts = [
      holder.mode ?? "holder",
      holder.fencingToken === undefined ? "" : `fencing token ${holder.fencingToken}`,
      holder.expiresInMs === undefined ? "" : `expires in ${formatDuration(holder.expiresInMs)}`,
      holder.owner === undefined ? "" : `owner ${holder.owner}`,
    ];
    process.stdout.write(`  ${parts.filter((p) => p !== "").join(", ")}\n`);
  }
}
