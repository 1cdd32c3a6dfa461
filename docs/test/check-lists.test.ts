import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { docsRoot } from "../scripts/samples.js";

/*
 * scripts/check-lists.ts, run as the build runs it (a process of its own:
 * VitePress's renderer does not load inside vitest), over every page and
 * over a page with the accident reliability.md had.
 */

const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), "locks-docs-lists-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

async function check(...pages: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await run("node", ["--import", "tsx", "scripts/check-lists.ts", ...pages], {
      cwd: docsRoot,
    });
    return { code: 0, stderr };
  } catch (error) {
    const failed = error as { code?: number; stderr?: string };
    return { code: failed.code ?? -1, stderr: failed.stderr ?? "" };
  }
}

describe("no list starts in the middle of a paragraph", { timeout: 60_000 }, () => {
  it("on any page of the site", async () => {
    const { code, stderr } = await check();
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });

  it("and the check finds one where a wrapped line begins with 1.", async () => {
    const page = join(scratch, "page.md");
    writeFileSync(
      page,
      [
        "# A page",
        "",
        "The restart loses the counter, and tokens start again from",
        "1. The fenced store then refuses every write.",
        "",
        "Steps:",
        "",
        "1. a list after a blank line is meant",
        "   - and so is a list nested in an item",
        "",
      ].join("\n"),
    );
    const { code, stderr } = await check(page);
    expect(code).toBe(1);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("page.md:4: a list starts inside a paragraph");
    expect(stderr).toContain("1. The fenced store then refuses every write.");
  });
});
