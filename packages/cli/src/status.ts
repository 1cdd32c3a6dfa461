import { isLockError, type KeyStatus, type Lease, type LockMode, type Locks } from "@locks/core";
import { backendUnavailable, validateKey } from "@locks/core/backend";
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
  // `status` calls the backend's inspect directly: the core's key rules, before any I/O.
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
    // Straight to the backend, not through the core: its errors are mapped here, as the core would.
    const result = await backend.inspect(locks.namespace, key).catch((error: unknown) => {
      throw isLockError(error) ? error : backendUnavailable(backend.name, error);
    });
    // A listed holder holds it: `held` alone must never hide one (semaphore holders once were).
    return {
      result: { ...result, held: result.held || result.holders.length > 0 },
      detailed: true,
    };
  }
  const ttlMs = Math.max(PROBE_TTL_MS, locks.backend.capabilities.minTtlMs ?? 0);
  let lease: Lease | null;
  try {
    lease = await locks.tryAcquire(key, { ttlMs, autoExtend: false });
  } catch (error) {
    // Refused because the holders took the key with another limit (a semaphore): held.
    if (isLockError(error, "INVALID_ARGUMENT") && error.message.startsWith("limit ")) {
      return { result: { held: true, holders: [] }, detailed: false };
    }
    throw error;
  }
  await lease?.release();
  return { result: { held: lease === null, holders: [] }, detailed: false };
}

/**
 * How a key with several holders is held, for the first line: "shared by 2",
 * "semaphore 2/3" (holders / limit; "2/?" where the backend cannot tell the
 * limit). Nothing for one exclusive holder: its own line says it.
 */
function describeHold(result: KeyStatus): string | undefined {
  const count = result.holders.length;
  if (isSemaphore(result)) return `semaphore ${count}/${result.limit ?? "?"}`;
  if (count > 0 && result.holders.every((holder) => holder.mode === "shared")) {
    return `shared by ${count}`;
  }
  return undefined;
}

/**
 * A semaphore's holders have mode "exclusive": the key's limit above 1 tells
 * them apart, or, where the backend cannot tell the limit, their number.
 */
function isSemaphore(result: KeyStatus): boolean {
  if (result.limit !== undefined) return result.limit > 1;
  return result.holders.length > 1 && result.holders.every((holder) => holder.mode === "exclusive");
}

/** One holder's mode for its line. */
function holderMode(result: KeyStatus, mode: LockMode | undefined): string {
  if (mode === "exclusive" && isSemaphore(result)) return "semaphore";
  return mode ?? "holder";
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
      ...(result.limit === undefined ? {} : { limit: result.limit }),
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
  const how = detailed ? describeHold(result) : undefined;
  process.stdout.write(
    `held: ${JSON.stringify(args.key)} (${where})${how === undefined ? "" : `: ${how}`}\n`,
  );
  if (!detailed) {
    process.stdout.write("  this backend cannot tell by whom\n");
    return;
  }
  for (const holder of result.holders) {
    const parts = [
      holderMode(result, holder.mode),
      holder.fencingToken === undefined ? "" : `fencing token ${holder.fencingToken}`,
      holder.expiresInMs === undefined ? "" : `expires in ${formatDuration(holder.expiresInMs)}`,
      holder.owner === undefined ? "" : `owner ${holder.owner}`,
    ];
    process.stdout.write(`  ${parts.filter((p) => p !== "").join(", ")}\n`);
  }
}
