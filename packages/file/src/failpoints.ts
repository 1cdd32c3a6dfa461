/**
 * Fault-injection points for tests (as etcd's gofail): production code calls
 * them, tests in another process set them to pause at a precise step, e.g.
 * `failpoints.beforeClaim = () => process.kill(process.pid, "SIGSTOP")`.
 * Internal: not exported from the package entry point.
 */
export interface Failpoints {
  /** Right before claiming (removing) a gate judged stale: the window of proper-lockfile's issue #121. */
  beforeClaim?: (gate: string) => void | Promise<void>;
  /** Right after `mkdir` made a gate, before its record is in: the window of a creator's long pause. */
  afterGateMade?: (gate: string) => void | Promise<void>;
  /** After that claim: `claimed` is false when someone else had claimed the record first. */
  afterClaim?: (gate: string, claimed: boolean) => void;
}

export const failpoints: Failpoints = {};
