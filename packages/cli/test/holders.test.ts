import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { createLocks } from "@locks/core";
import { redisBackend } from "@locks/redis";
import { describe, expect, inject, it } from "vitest";
import { holdCommand, locksCli, nodeCommand } from "./spawn.js";

/** `--backend` and a fresh `--namespace` on `url`. */
function where(url: string): string[] {
  return ["--backend", url, "--namespace", `ns-${randomBytes(6).toString("hex")}`];
}

/** `locks` for one test on the Redis server, in a fresh namespace, and a client of it in this process. */
function setup(onTestFinished: (fn: () => Promise<void>) => void) {
  const cli = locksCli(onTestFinished);
  const target = where(inject("redisUrl"));
  const viewer = createLocks(redisBackend({ url: inject("redisUrl") }), { namespace: target[3] });
  onTestFinished(() => viewer.close());
  return {
    cli,
    viewer,
    run: (args: string[]) => ["run", ...target, ...args],
    status: (args: string[]) => ["status", ...target, ...args],
    release: (args: string[]) => ["release", ...target, ...args],
  };
}

/** The fencing token a `holdCommand` printed ("ready <token>"). */
function readyToken(stdout: string): bigint {
  const token = /^ready (\d+)$/m.exec(stdout)?.[1];
  expect(token, stdout).toBeDefined();
  return BigInt(token ?? "0");
}

/** A command that prints its LOCKS_FENCING_TOKEN and exits. */
const printToken = nodeCommand("console.log(process.env.LOCKS_FENCING_TOKEN)");

describe("holder labels, --min-hold and release --force (redis unless named)", () => {
  it("status shows each holder's label: --holder, or host:pid of locks by default", async ({
    onTestFinished,
  }) => {
    const { cli, run, status } = setup(onTestFinished);
    // Another process chose it: it must not break status's lines or reach the terminal raw.
    const label = 'job 7 "blue"\n\x1b[31m\u202e';
    const named = cli.start(run(["-s", "--holder", label, "k", "--", ...holdCommand()]));
    const unnamed = cli.start(run(["-s", "k", "--", ...holdCommand()]));
    await Promise.all([named.waitForOutput("ready"), unnamed.waitForOutput("ready")]);
    const [text, json] = await Promise.all([
      cli.run(status(["k"])),
      cli.run(status(["--json", "k"])),
    ]);
    expect(text.code, text.stderr).toBe(1);
    const lines = text.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^held: "k" \(.*\): shared by 2$/);
    expect(lines, text.stdout).toHaveLength(3);
    for (const prefix of [
      `  holder "job 7 \\"blue\\"\\n\\u001b[31m\\u202e", shared, fencing token ${readyToken(named.stdout())}, expires in `,
      `  holder ${hostname()}:${unnamed.process.pid}, shared, fencing token ${readyToken(unnamed.stdout())}, expires in `,
    ]) {
      expect(
        lines.some((line) => line.startsWith(prefix)),
        `${prefix}\n${text.stdout}`,
      ).toBe(true);
    }
    const parsed = JSON.parse(json.stdout) as { held: boolean; holders: { holder: string }[] };
    expect(parsed.held).toBe(true);
    expect(parsed.holders.map((h) => h.holder).sort()).toEqual(
      [label, `${hostname()}:${unnamed.process.pid}`].sort(),
    );
    for (const holder of [named, unnamed]) holder.endInput();
    for (const holder of [named, unnamed]) expect((await holder.ended).code).toBe(0);
  });

  it("--min-hold keeps the key held after a quick command ends, then frees it", async ({
    onTestFinished,
  }) => {
    const { cli, viewer, run } = setup(onTestFinished);
    const job = cli.start(run(["-v", "--min-hold", "6s", "nightly", "--", ...holdCommand()]));
    await job.waitForOutput("ready");
    job.endInput();
    // The command has ended and its lease was released; `locks` stays until the hold is over.
    await job.waitForOutput('keeping "nightly" held for', "stderr");
    const [state, skipped] = await Promise.all([
      viewer.inspect("nightly"),
      cli.run(run(["-n", "nightly", "--", "true"])),
    ]);
    expect(state.holders.map((h) => h.holder)).toEqual([`${hostname()}:${job.process.pid}`]);
    expect(skipped.code, skipped.stderr).toBe(75);
    // Then `locks` exits with the command's code, the key is free, and the next grant is fenced above.
    expect((await job.ended).code).toBe(0);
    const next = await viewer.acquire("nightly", { timeoutMs: 60_000 });
    expect(next.fencingToken).toBeGreaterThan(readyToken(job.stdout()));
    await next.release();
  });

  it("release --force evicts a running holder, which is fenced and stopped; exit 1 on a free key", async ({
    onTestFinished,
  }) => {
    const { cli, run, release } = setup(onTestFinished);
    const evicted = cli.start(run(["--ttl", "2s", "k", "--", ...holdCommand()]));
    await evicted.waitForOutput("ready");
    const freed = await cli.run(release(["--force", "k"]));
    expect(freed.code, freed.stderr).toBe(0);
    expect(freed.stdout).toMatch(/^freed: "k" \(/);
    const next = await cli.run(run(["-n", "k", "--", ...printToken]));
    expect(next.code, next.stderr).toBe(0);
    expect(BigInt(next.stdout.trim())).toBeGreaterThan(readyToken(evicted.stdout()));
    // The evicted `locks run` notices (at the latest at its next extension) and stops its command.
    const ended = await evicted.ended;
    expect(ended.code, ended.stderr).toBe(70);
    expect(ended.stdout).toContain("got SIGTERM");
    expect(ended.stderr).toMatch(/lost the lock on "k"/);

    const [notHeld, quiet] = await Promise.all([
      cli.run(release(["--force", "k"])),
      cli.run(release(["-f", "-q", "k"])),
    ]);
    expect(notHeld.code, notHeld.stderr).toBe(1);
    expect(notHeld.stdout).toMatch(/^not held: "k" \(/);
    expect(quiet).toMatchObject({ code: 1, stdout: "", stderr: "" });
  });

  it("--min-hold on a backend without TTL (mysql): the key stays held while locks stays, until a signal", async ({
    onTestFinished,
  }) => {
    const cli = locksCli(onTestFinished);
    const mysql = where(inject("mysqlUrl"));
    const job = cli.start(["run", ...mysql, "-v", "--min-hold", "5m", "k", "--", "true"]);
    await job.waitForOutput('keeping "k" held for', "stderr");
    const held = await cli.run(["status", ...mysql, "k"]);
    expect(held.code, held.stderr).toBe(1);
    expect(held.stdout).toContain(`holder ${hostname()}:${job.process.pid}, exclusive`);
    expect(held.stdout).toContain("no TTL");
    job.process.kill("SIGTERM");
    const ended = await job.ended;
    expect(ended.code, ended.stderr).toBe(0);
    expect(ended.stderr).toContain(
      'SIGTERM during --min-hold: exiting before the hold on "k" is over',
    );
    const free = await cli.run(["status", ...mysql, "k"]);
    expect(free.code, free.stdout).toBe(0);
  });
});
