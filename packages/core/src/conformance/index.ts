/**
 * The conformance suite: one call in a backend's test file runs every test
 * the backend's capabilities imply, and says which capability skipped the rest.
 *
 * ```ts
 * import { runConformanceSuite } from "@locks/core/conformance";
 * runConformanceSuite({ name: "mine", create: () => myBackend() });
 * ```
 *
 * @module
 */
import { describe } from "vitest";
import type { Backend, Capabilities } from "../backend.js";
import { basicTests } from "./basics.js";
import { compositeTests } from "./composites.js";
import { deadlineTests } from "./deadlines.js";
import { electionTests } from "./elections.js";
import { exclusionTests } from "./exclusion.js";
import { fairnessTests } from "./fairness.js";
import { floorTests } from "./floor.js";
import { handOffTests } from "./handoffs.js";
import { holderTests, type Optional } from "./holders.js";
import { inputTests } from "./input.js";
import { lifecycleTests } from "./lifecycle.js";
import { type Hooks, limitTests } from "./limits.js";
import { manifestTests } from "./manifest.js";
import { modeTests } from "./modes.js";
import type { ConformanceOptions } from "./options.js";
import { processTests } from "./processes.js";
import { ttlTests } from "./ttl.js";
import { waitingTests } from "./waiting.js";
import { webLockTests } from "./web-locks.js";

export type { ConformanceOptions } from "./options.js";

/**
 * Registers the suite with vitest. The capabilities are read from one
 * instance made by `options.create()` while vitest collects the tests: the
 * backend's own manifest is the single source of truth for what runs and
 * what is skipped (and why).
 */
export function runConformanceSuite(options: ConformanceOptions): void {
  describe(`${options.name} conformance`, async () => {
    const probe: Backend = await options.create();
    const capabilities: Capabilities = { ...probe.capabilities };
    const optional: Optional = {
      inspect: typeof probe.inspect === "function",
      forceRelease: typeof probe.forceRelease === "function",
    };
    const hooks: Hooks = { inspect: optional.inspect };
    await probe.close();
    describe(`[${describeCapabilities(capabilities)}]`, () => {
      manifestTests(options, capabilities);
      basicTests(options, capabilities);
      exclusionTests(options, capabilities);
      waitingTests(options, capabilities);
      ttlTests(options, capabilities);
      deadlineTests(options, capabilities);
      modeTests(options, capabilities);
      limitTests(options, capabilities, hooks);
      fairnessTests(options, capabilities);
      handOffTests(options, capabilities);
      inputTests(options, capabilities);
      floorTests(options, capabilities);
      lifecycleTests(options, capabilities);
      processTests(options, capabilities);
      holderTests(options, capabilities, optional);
      compositeTests(options, capabilities);
      electionTests(options, capabilities, optional);
      webLockTests(options, capabilities, optional);
    });
  });
}

function describeCapabilities(c: Capabilities): string {
  const flags = (["ttl", "fencing", "shared", "semaphore", "fair", "notify"] as const).map(
    (flag) => `${c[flag] ? "+" : "-"}${flag}`,
  );
  return [`scope=${c.scope}`, ...flags].join(" ");
}
