import { isLockError, type Lease, type Locks } from "@locks/core";
import { validateHolder } from "@locks/core/backend";
import { parseRunArgs, quote, type RunArgs } from "./args.js";
import { describeOutcome, startCommand } from "./child.js";
import { closeLocks, openLocks } from "./client.js";
import { formatDuration } from "./duration.js";
import { ExitCode } from "./exit-codes.js";
import { RUN_HELP } from "./help.js";
import { showProgress } from "./progress.js";
import { say, write } from "./report.js";
import { Interrupted, SignalRouter, signalExitCode } from "./signals.js";
import { UsageError } from "./usage-error.js";

/** `locks run`: resolves with the exit code. */
export async function run(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseRunArgs(argv, env);
  if (args === "help") {
    write("stdout", RUN_HELP);
    return 0;
  }
  // The core's rule for labels (it checks again at acquire), here before any connection is made.
  validateHolder(args.holder, "--holder");
  const interrupt = new AbortController();
  // Caught from the start: a signal while connecting or waiting stops the wait, and the command never runs.
  using signals = new SignalRouter((signal) => interrupt.abort(new Interrupted(signal)));
  const locks = await openLocks(args, args.ttlMs);
  try {
    const lease = await acquire(locks, args, interrupt.signal);
    if (typeof lease === "number") return lease;
    if (interrupt.signal.reason instanceof Interrupted) {
      // The signal came with the grant: honour it rather than start the command.
      const { signal } = interrupt.signal.reason;
      say(`${signal} while taking "${args.key}": ${quote(args.command)} was not run`);
      await lease.release().catch(() => undefined);
      return signalExitCode(signal);
    }
    return await runHolding(lease, args, env, signals);
  } finally {
    signals.handler = (signal) => {
      say(
        `${signal} while releasing "${args.key}": exiting now; the lock frees itself after its TTL`,
      );
      process.exit(signalExitCode(signal));
    };
    await closeLocks(locks);
  }
}

/** Waits for the lease; a number is the exit code when there is none (conflict or signal). */
async function acquire(locks: Locks, args: RunArgs, signal: AbortSignal): Promise<Lease | number> {
  const options = {
    mode: args.shared ? ("shared" as const) : ("exclusive" as const),
    limit: args.limit,
    holder: args.holder,
    minHoldMs: args.minHoldMs,
  };
  const start = performance.now();
  try {
    // One attempt first, so that a wait can be announced (--verbose) and --timeout 0 is one attempt.
    let lease = await locks.tryAcquire(args.key, { ...options, signal });
    if (lease === null) {
      if (args.timeoutMs === 0) return conflict(args);
      if (args.verbose) {
        const upTo = Number.isFinite(args.timeoutMs)
          ? ` (up to ${formatDuration(args.timeoutMs)})`
          : "";
        say(`"${args.key}" is held: waiting${upTo}`);
      }
      const stopProgress = showProgress(args.key, start, !args.quiet);
      const timeoutMs = Math.max(0, args.timeoutMs - (performance.now() - start));
      try {
        lease = await locks.acquire(args.key, { ...options, timeoutMs, signal });
      } finally {
        // Before any message: on a terminal, a message written first would land on the progress line.
        stopProgress();
      }
    }
    if (args.verbose) {
      const waited = performance.now() - start;
      const after = waited >= 1_000 ? ` after ${formatDuration(waited)}` : "";
      say(
        `acquired "${args.key}"${after} (fencing token ${lease.fencingToken}): running ${quote(args.command)}`,
      );
    }
    return lease;
  } catch (error) {
    if (error instanceof Interrupted) {
      say(`${error.signal} while waiting for "${args.key}": ${quote(args.command)} was not run`);
      return signalExitCode(error.signal);
    }
    if (isLockError(error, "LOCK_TIMEOUT")) return conflict(args);
    // A refusal that depends on the key's holders (a --limit other than theirs): say which key.
    if (isLockError(error, "INVALID_ARGUMENT")) {
      throw new UsageError(`cannot take "${args.key}": ${error.message}`);
    }
    throw error;
  }
}

function conflict(args: RunArgs): number {
  if (!args.quiet) {
    const waited = args.timeoutMs === 0 ? "" : ` after ${formatDuration(args.timeoutMs)}`;
    say(`"${args.key}" is still held${waited}: ${quote(args.command)} was not run`);
  }
  return args.conflictExitCode;
}

/**
 * Runs the command while the lease is held, passing signals on, and stops it
 * (SIGTERM, then SIGKILL after --kill-after) when the lease is lost.
 */
async function runHolding(
  lease: Lease,
  args: RunArgs,
  env: NodeJS.ProcessEnv,
  signals: SignalRouter,
): Promise<number> {
  if (lease.signal.aborted) return lostBeforeStart(lease, args);
  const grantedAt = performance.now();
  const command = startCommand(args.command, args.args, {
    ...env,
    LOCKS_KEY: args.key,
    LOCKS_FENCING_TOKEN: lease.fencingToken.toString(),
  });
  signals.handler = (signal) => {
    command.process.kill(signal);
  };
  let lost = false;
  let killTimer: NodeJS.Timeout | undefined;
  const onEnd = (): void => {
    const reason: unknown = lease.signal.reason;
    if (!isLockError(reason, "LOCK_LOST")) return;
    lost = true;
    say(
      `lost the lock on "${args.key}" while ${quote(args.command)} ran (${reason.message}): sending it SIGTERM, SIGKILL in ${formatDuration(args.killAfterMs)}`,
    );
    command.process.kill("SIGTERM");
    killTimer = setTimeout(() => command.process.kill("SIGKILL"), args.killAfterMs);
  };
  lease.signal.addEventListener("abort", onEnd, { once: true });
  const outcome = await command.outcome;
  lease.signal.removeEventListener("abort", onEnd);
  clearTimeout(killTimer);

  if (outcome.kind === "not-started") say(outcome.problem);
  if (lost) {
    say(
      `${quote(args.command)} ${describeOutcome(outcome)} after the lock was lost: exit ${ExitCode.lost}`,
    );
    return ExitCode.lost;
  }
  try {
    await lease.release();
    if (args.verbose)
      say(`released "${args.key}": ${quote(args.command)} ${describeOutcome(outcome)}`);
  } catch (error) {
    say(
      `warning: could not release "${args.key}" (${(error as Error).message}); it frees itself after its TTL`,
    );
  }
  await stayForMinHold(args, grantedAt, signals);
  return outcome.code;
}

/**
 * Stays until `--min-hold` has passed since the grant. The core keeps a key
 * released sooner held until then, but not every store outlives the client:
 * PostgreSQL and MySQL locks end with the session, etcd revokes the session
 * leases at close, and lock files are removed when the process exits. A
 * signal ends the stay, and the key may then be freed early.
 */
async function stayForMinHold(
  args: RunArgs,
  grantedAt: number,
  signals: SignalRouter,
): Promise<void> {
  const left = grantedAt + args.minHoldMs - performance.now();
  if (left <= 0) return;
  if (args.verbose) {
    say(`keeping "${args.key}" held for ${formatDuration(left)} more (--min-hold)`);
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, left);
    signals.handler = (signal) => {
      say(`${signal} during --min-hold: exiting before the hold on "${args.key}" is over`);
      clearTimeout(timer);
      resolve();
    };
  });
}

function lostBeforeStart(lease: Lease, args: RunArgs): number {
  const reason: unknown = lease.signal.reason;
  say(
    `lost the lock on "${args.key}" before ${quote(args.command)} started (${reason instanceof Error ? reason.message : String(reason)}): it was not run`,
  );
  return ExitCode.lost;
}
