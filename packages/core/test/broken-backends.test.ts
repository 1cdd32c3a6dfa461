import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";

/*
 * The suite is only worth something if it catches broken backends. Each file
 * in broken/ runs it against the in-memory backend with one promise broken
 * on purpose; this test runs them in a separate vitest process and checks
 * that the test guarding that promise, and only tests of that kind, failed.
 */
const packageDir = fileURLToPath(new URL("..", import.meta.url));

interface AssertionResult {
  readonly fullName: string;
  readonly status: string;
}
interface Report {
  readonly testResults: ReadonlyArray<{
    readonly name: string;
    readonly assertionResults: AssertionResult[];
  }>;
}

let failedBySuite: Map<string, string[]>;
let passedBySuite: Map<string, number>;

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), "locks-broken-"));
  const output = join(dir, "report.json");
  try {
    await promisify(execFile)(
      process.execPath,
      [
        join(packageDir, "node_modules", "vitest", "vitest.mjs"),
        "run",
        "--config",
        "test/broken/vitest.config.ts",
        "--root",
        ".",
        "--reporter=json",
        `--outputFile=${output}`,
        // Only the guarding tests (of every variant, so each file still runs dozens that must pass):
        // the whole suite 25 times over was most of this package's test time.
        "--testNamePattern",
        expectations.map(([, guard]) => guard.source).join("|"),
      ],
      { cwd: packageDir, env: { ...process.env, FORCE_COLOR: "0" }, maxBuffer: 64 * 1024 * 1024 },
    ).catch((error: { code?: number }) => {
      // vitest exits 1 when tests fail, which is the point here.
      if (error.code !== 1) throw error;
    });
    const report = JSON.parse(await readFile(output, "utf8")) as Report;
    failedBySuite = new Map();
    passedBySuite = new Map();
    for (const file of report.testResults) {
      const variant = /broken\/(\w+)\.suite\.ts$/.exec(file.name)?.[1] ?? file.name;
      failedBySuite.set(
        variant,
        file.assertionResults.filter((a) => a.status === "failed").map((a) => a.fullName),
      );
      passedBySuite.set(variant, file.assertionResults.filter((a) => a.status === "passed").length);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 400_000);

const expectations: Array<[string, RegExp]> = [
  ["noOwnerCheck", /by a non-owner leaves the holder's lock in place/],
  ["flakyTry", /tryAcquire never grants a key another instance holds/],
  ["localTokens", /tokens strictly increase/],
  // The core releases a lease it declares lost, so only a lock taken straight through the
  // backend (no lease, no watchdog) is left to the store's own TTL.
  ["ttlNeverExpires", /backend's extend resolves false, .* after a takeover/],
  ["ignoresAbort", /aborted while waiting/],
  ["lifo", /order they started waiting/],
  ["silent", /woken by the release/],
  ["bmpOnlyKeys", /treats every key string as distinct/],
  ["floorTooLow", /declares a minTtlMs, if any/],
  ["slowReplies", /grants a free key with ttlMs at the floor/],
  ["leakyTimer", /leaves no timer or socket behind/],
  ["lateSubscribe", /in flight on a slow store .* is not lost/],
  ["truncatedTtl", /signal aborts by start \+ TTL - 1%, before another client can take the key/],
  ["validUntilNoDrift", /expiresAt leaves the 1% drift allowance/],
  ["staleOwnerMap", /backend's extend resolves false, .* after a takeover/],
  ["semaphoreSilent", /freed semaphore slot is handed over by the release/],
  ["semaphoreSilent", /writer waiting on two readers is handed the key by their releases/],
  ["lifoSemaphore", /freed semaphore slot to the waiter that waited longest/],
  ["noLimitCheck", /refuses a limit other than the one the key's holders use/],
  ["inspectNoLimit", /inspect reports a semaphore's limit/],
  ["inspectNoLimit", /inspect reports readers as shared/],
  ["inspectNoLabels", /reports the holder's label, mode, token and expiry to another instance/],
  ["inspectNoLabels", /one candidate leads at a time; leader\(\) names it/],
  ["forceReleaseReusesToken", /evicts the holder: .* later tokens are higher/],
  ["forceReleaseKeepsHold", /evicts the holder: .* the evicted lease cannot extend/],
  // A Web Locks steal from another instance: the thief's token and the victim's rejection.
  ["forceReleaseReusesToken", /steal from another instance evicts the holder/],
  ["forceReleaseKeepsHold", /steal from another instance evicts the holder/],
];

describe("the conformance suite rejects broken backends", () => {
  it.each(expectations)("%s fails the test that guards it: %s", (variant, guard) => {
    const failed = failedBySuite.get(variant);
    expect(failed, `no report for ${variant}`).toBeDefined();
    expect(
      failed!.some((name) => guard.test(name)),
      `failed tests: ${failed!.join("; ")}`,
    ).toBe(true);
    // The rest of the suite still ran: a broken flag must not crash the whole file.
    expect(passedBySuite.get(variant)).toBeGreaterThan(10);
  });

  it("has an expectation for every broken variant", () => {
    expect([...failedBySuite.keys()].sort()).toEqual(
      [...new Set(expectations.map(([variant]) => variant))].sort(),
    );
  });
});
