import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const fixture = fileURLToPath(new URL("./fixtures/late-grants.ts", import.meta.url));

/** Runs the fixture in its own process, killed after 10 s if its event loop froze. */
function run(mode: string): Promise<{ stdout: string; signal: string | null }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "--conditions=@locks/source", fixture, mode],
      { timeout: 10_000, killSignal: "SIGKILL" },
      (error, stdout) => resolve({ stdout, signal: error?.signal ?? null }),
    );
  });
}

describe("retry loops yield to the event loop", () => {
  it.each(["poll", "queue"])(
    "times out while every grant is refused as too late (%s)",
    async (mode) => {
      const { stdout, signal } = await run(mode);
      expect(signal, "the process froze and was killed").toBeNull();
      expect(stdout).toBe("LOCK_TIMEOUT");
    },
  );
});
