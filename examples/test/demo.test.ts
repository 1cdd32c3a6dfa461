import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect, it } from "vitest";

const dir = fileURLToPath(new URL("..", import.meta.url));

it("the README's demo runs as written and shows each feature working", async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--conditions=@locks/source", "--import", "tsx", "demo.ts"],
    { cwd: dir, timeout: 30_000 },
  );
  const lines = stdout.trim().split("\n");
  // Critical sections never interleave: every start is followed by its own end.
  const sections = [...lines[0]!.matchAll(/(\w):start\(token \d+\) (\w):end/g)];
  expect(sections).toHaveLength(4);
  for (const [, started, ended] of sections) expect(ended).toBe(started);
  expect(lines[1]).toMatch(/^2\. held with token \d+; a second tryAcquire got: null$/);
  expect(lines[2]).toBe("3. waiting for a held key: LOCK_TIMEOUT");
  expect(lines[3]).toBe("4. writer got doc:7 after the 3 readers left");
  expect(lines[4]).toBe("5. 10 jobs through a semaphore of 4: at most 4 at once");
});
