import { execFile } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { collectSamples, docsRoot, sampleSource, samplesDir } from "../scripts/samples.js";

/*
 * Samples marked ```ts run (the getting-started one, the fencing example)
 * are executed on the thread backend, in a process of their own, exactly as
 * a reader would run them; the ```text output block after each is what it
 * must print. (Every sample is type-checked by `pnpm --filter @locks/docs typecheck`.)
 */

const run = promisify(execFile);
const runnable = collectSamples().filter((s) => s.run);
const dir = join(samplesDir, "run");

describe("runnable samples", () => {
  it("include the getting-started one", () => {
    expect(runnable.map((s) => s.page)).toContain("guide/getting-started.md");
  });

  it.each(runnable.map((s) => [`${s.page}:${s.line}`, s] as const))(
    "%s runs",
    async (_, sample) => {
      mkdirSync(dir, { recursive: true });
      const file = join(dir, sample.fileName);
      writeFileSync(file, sampleSource(sample));
      const { stdout } = await run(
        process.execPath,
        ["--conditions=@locks/source", "--import", "tsx", file],
        {
          cwd: docsRoot,
          timeout: 20_000,
        },
      );
      if (sample.output !== undefined) expect(stdout.trim()).toBe(sample.output.trim());
    },
  );
});
