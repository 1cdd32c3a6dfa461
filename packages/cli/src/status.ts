import type { LockHolder, LockState } from "@locks/core";
import { parseStatusArgs, quote, type StatusArgs } from "./args.js";
import { describeLocation } from "./backends.js";
import { closeLocks, openLocks } from "./client.js";
import { formatDuration } from "./duration.js";
import { ExitCode } from "./exit-codes.js";
import { STATUS_HELP } from "./help.js";
import { write } from "./report.js";

/** `locks status`: prints who holds the key; exit 0 free, 1 held. */
export async function status(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseStatusArgs(argv, env);
  if (args === "help") {
    write("stdout", STATUS_HELP);
    return 0;
  }
  const locks = await openLocks(args);
  try {
    const state = await locks.inspect(args.key);
    if (!args.quiet) {
      write(
        "stdout",
        args.json ? toJson(args, locks.namespace, state) : toText(args, locks.namespace, state),
      );
    }
    return state.holders.length > 0 ? ExitCode.held : 0;
  } finally {
    await closeLocks(locks);
  }
}

/**
 * How a key with several holders is held, for the first line: "shared by 2",
 * "semaphore 2/3" (holders / limit; "2/?" where the backend cannot tell the
 * limit). Nothing for one exclusive holder: its own line says it.
 */
function describeHold(state: LockState): string | undefined {
  const count = state.holders.length;
  if (isSemaphore(state)) return `semaphore ${count}/${state.limit ?? "?"}`;
  if (count > 0 && state.holders.every((holder) => holder.mode === "shared")) {
    return `shared by ${count}`;
  }
  return undefined;
}

/**
 * A semaphore's holders have mode "exclusive": the key's limit above 1 tells
 * them apart, or, where the backend cannot tell the limit, their number.
 */
function isSemaphore(state: LockState): boolean {
  if (state.limit !== undefined) return state.limit > 1;
  return state.holders.length > 1 && state.holders.every((holder) => holder.mode === "exclusive");
}

/** Milliseconds until the store frees the holder's lock; undefined without TTL. */
function expiresInMs(holder: LockHolder, now: number): number | undefined {
  return holder.expiresAt === undefined ? undefined : Math.max(0, holder.expiresAt - now);
}

function toJson(args: StatusArgs, namespace: string, state: LockState): string {
  const now = Date.now();
  const holders = state.holders.map((holder) => {
    const expires = expiresInMs(holder, now);
    return {
      holder: holder.holder ?? null,
      mode: holder.mode,
      fencingToken: holder.fencingToken.toString(),
      ...(expires === undefined ? {} : { expiresInMs: expires }),
    };
  });
  const out = {
    key: args.key,
    namespace,
    backend: args.backend.kind,
    held: holders.length > 0,
    ...(state.limit === undefined ? {} : { limit: state.limit }),
    holders,
  };
  return `${JSON.stringify(out)}\n`;
}

function toText(args: StatusArgs, namespace: string, state: LockState): string {
  const where = describeLocation(args.backend, namespace);
  if (state.holders.length === 0) return `free: ${JSON.stringify(args.key)} (${where})\n`;
  const how = describeHold(state);
  const lines = [
    `held: ${JSON.stringify(args.key)} (${where})${how === undefined ? "" : `: ${how}`}`,
  ];
  const now = Date.now();
  for (const holder of state.holders) {
    const expires = expiresInMs(holder, now);
    const parts = [
      `holder ${holder.holder === undefined ? "-" : quote(holder.holder)}`,
      holder.mode === "exclusive" && isSemaphore(state) ? "semaphore" : holder.mode,
      holder.fencingToken === 0n ? "no fencing token" : `fencing token ${holder.fencingToken}`,
      expires === undefined ? "no TTL" : `expires in ${formatDuration(expires)}`,
    ];
    lines.push(`  ${parts.join(", ")}`);
  }
  return `${lines.join("\n")}\n`;
}
