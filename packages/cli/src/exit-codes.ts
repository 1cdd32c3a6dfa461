/**
 * The exit codes of `locks` itself. Besides these, `locks run` exits with the
 * command's own code, or 128 + the signal number when a signal ended it.
 *
 * @group Command
 */
export const ExitCode = {
  /** Bad input (unknown option, malformed backend URL, bad duration, missing `--`) or an unreachable server. */
  usage: 2,
  /** An unexpected internal error (a bug: please report it). */
  internal: 1,
  /** `locks status`: the key is held. */
  held: 1,
  /** `locks release --force`: the key was not held; nothing was freed (as `pkill` when nothing matched). */
  notHeld: 1,
  /** The lock was lost while the command ran; the command was stopped. */
  lost: 70,
  /** Default for `--conflict-exit-code`: the key stayed held until `--timeout` (EX_TEMPFAIL, like `flock -E`). */
  conflict: 75,
  /** The command was found but could not be executed (permissions), as in shells. */
  cannotExecute: 126,
  /** The command was not found, as in shells. */
  notFound: 127,
} as const;
