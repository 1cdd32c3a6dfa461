import { parseReleaseArgs } from "./args.js";
import { describeLocation } from "./backends.js";
import { closeLocks, openLocks } from "./client.js";
import { ExitCode } from "./exit-codes.js";
import { RELEASE_HELP } from "./help.js";
import { write } from "./report.js";

/**
 * `locks release --force`: frees the key whoever holds it (the core's
 * `forceRelease`); exit 0 when something was freed, 1 when it was not held.
 */
export async function release(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseReleaseArgs(argv, env);
  if (args === "help") {
    write("stdout", RELEASE_HELP);
    return 0;
  }
  const locks = await openLocks(args);
  try {
    const freed = await locks.forceRelease(args.key);
    if (!args.quiet) {
      const where = describeLocation(args.backend, locks.namespace);
      write(
        "stdout",
        freed
          ? `freed: ${JSON.stringify(args.key)} (${where}); its holders lost the lock, the next holder gets a higher fencing token\n`
          : `not held: ${JSON.stringify(args.key)} (${where}); nothing was freed\n`,
      );
    }
    return freed ? 0 : ExitCode.notHeld;
  } finally {
    await closeLocks(locks);
  }
}
