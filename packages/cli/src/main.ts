import { quote } from "./args.js";
import { ExitCode } from "./exit-codes.js";
import { MAIN_HELP, RELEASE_HELP, RUN_HELP, STATUS_HELP } from "./help.js";
import { flushOutput, reportError, write } from "./report.js";
import { UsageError } from "./usage-error.js";
import { cliVersion } from "./version.js";

/**
 * Runs the `locks` command line (`argv` without node and the script) and
 * resolves with the exit code, once its output is flushed. Writes to this
 * process's stdio and, for `locks run`, handles its signals while the
 * command runs.
 *
 * @group Command
 */
export async function main(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const code = await command(argv, env);
  await flushOutput();
  return code;
}

async function command(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  try {
    const [command, ...rest] = argv;
    switch (command) {
      case undefined:
        write("stderr", MAIN_HELP);
        return ExitCode.usage;
      case "-h":
      case "--help":
        write("stdout", MAIN_HELP);
        return 0;
      case "help":
        write("stdout", helpFor(rest[0]));
        return 0;
      case "-V":
      case "--version":
        write("stdout", `${cliVersion()}\n`);
        return 0;
      case "run": {
        // Loaded on demand: `locks --version` and `--help` never load the core.
        const { run } = await import("./run.js");
        return await run(rest, env);
      }
      case "status": {
        const { status } = await import("./status.js");
        return await status(rest, env);
      }
      case "release": {
        const { release } = await import("./release.js");
        return await release(rest, env);
      }
      default:
        throw new UsageError(
          command.startsWith("-")
            ? `unknown option ${quote(command)} (see locks --help)`
            : `unknown command ${quote(command)}: use locks run, locks status or locks release (see locks --help)`,
        );
    }
  } catch (error) {
    return reportError(error, env);
  }
}

function helpFor(command: string | undefined): string {
  if (command === "run") return RUN_HELP;
  if (command === "status") return STATUS_HELP;
  if (command === "release") return RELEASE_HELP;
  if (command === undefined) return MAIN_HELP;
  throw new UsageError(
    `no help for ${quote(command)}: use locks help run, locks help status or locks help release`,
  );
}
