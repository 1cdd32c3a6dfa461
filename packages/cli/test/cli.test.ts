import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { assertHistory, type HoldRecord } from "@locks/core";
import {
  freePort,
  type RedisServer,
  redisCommand,
  startRedis,
  startRedisGroup,
  waitFor,
} from "@locks/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { appendCommand, holdCommand, locksCli, locksCommandLine, nodeCommand } from "./spawn.js";

let scratch: string;
let redlockServers: RedisServer[] = [];
beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), "locks-cli-test-"));
  redlockServers = await startRedisGroup(3);
});
afterAll(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await Promise.all(redlockServers.map((server) => server.stop()));
});

function unique(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

/** One line on stderr, no stack trace: what bad input and unreachable servers must produce. */
function expectOneLine(stderr: string): void {
  const lines = stderr.trimEnd().split("\n");
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^locks/);
  expect(stderr).not.toMatch(/^\s+at /m);
}

/**
 * Checks the start/end lines written by `appendCommand`: strictly alternating
 * (one command at a time), every hold inside the previous one's end, fencing
 * tokens increasing in grant order (the core's history checker).
 */
function checkAppendLog(file: string, ids: readonly string[]): void {
  const lines = readFileSync(file, "utf8").trimEnd().split("\n");
  expect(lines).toHaveLength(ids.length * 2);
  const holds: HoldRecord[] = [];
  for (let i = 0; i < lines.length; i += 2) {
    const [startWord, id, token, startedAt] = (lines[i] ?? "").split(" ");
    const [endWord, endId, endedAt] = (lines[i + 1] ?? "").split(" ");
    expect([startWord, endWord, endId], lines.join("\n")).toEqual(["start", "end", id]);
    expect(token).toMatch(/^\d+$/);
    holds.push({
      owner: id ?? "",
      key: "k",
      mode: "exclusive",
      limit: 1,
      token: token ?? "",
      acquiredAt: Number(startedAt),
      releasedAt: Number(endedAt),
    });
  }
  expect(holds.map((h) => h.owner).sort()).toEqual([...ids].sort());
  assertHistory(holds, { fencing: true });
}

interface BackendCase {
  readonly name: string;
  /** `--backend ...` arguments (none: the default per-user directory). */
  readonly backendArgs: () => string[];
  /** Environment for `locks` (the default file backend's XDG_RUNTIME_DIR). */
  readonly env?: () => NodeJS.ProcessEnv;
  /** `locks status` names the holder's fencing token (the backend's inspect reports it). */
  readonly statusShowsToken: boolean;
}

const cases: BackendCase[] = [
  {
    name: "file (default directory)",
    backendArgs: () => [],
    env: () => ({ XDG_RUNTIME_DIR: scratch }),
    statusShowsToken: true,
  },
  {
    name: "redis",
    backendArgs: () => ["--backend", inject("redisUrl")],
    statusShowsToken: true,
  },
  {
    name: "redis (Redlock over 3 servers)",
    backendArgs: () => redlockServers.flatMap((server) => ["--backend", server.url]),
    statusShowsToken: true,
  },
  {
    name: "etcd",
    backendArgs: () => [
      "--backend",
      `etcd://${inject("etcdEndpoints")
        .map((endpoint) => endpoint.replace(/^https?:\/\//, ""))
        .join(",")}`,
    ],
    statusShowsToken: true,
  },
  {
    name: "postgres",
    backendArgs: () => ["--backend", inject("databaseUrl")],
    statusShowsToken: false,
  },
];

describe.each(cases)("locks run on $name", (backend) => {
  /** `locks` for one test, on this backend, in a fresh namespace. */
  function setup(onTestFinished: (fn: () => Promise<void>) => void) {
    const cli = locksCli(onTestFinished, backend.env?.() ?? {});
    const where = [...backend.backendArgs(), "--namespace", unique("ns")];
    return {
      cli,
      run: (args: string[]) => ["run", ...where, ...args],
      status: (key: string) => ["status", ...where, key],
    };
  }

  it("never runs two commands on one key at once; LOCKS_FENCING_TOKEN increases", async ({
    onTestFinished,
  }) => {
    const { cli, run } = setup(onTestFinished);
    const log = join(scratch, `${unique("log")}.txt`);
    writeFileSync(log, "");
    const ids = ["a", "b", "c"];
    const key = "key: with spaces/ü";
    const ended = await Promise.all(
      ids.map((id) => cli.run(run([key, "--", ...appendCommand(log, id, 150)]))),
    );
    for (const end of ended) {
      expect(end, end.stderr).toMatchObject({ code: 0, stderr: "", stdout: `${key}\n` });
    }
    checkAppendLog(log, ids);
  });

  it("exits with the conflict code when the key is held and --timeout is 0", async ({
    onTestFinished,
  }) => {
    const { cli, run, status } = setup(onTestFinished);
    const holder = cli.start(run(["busy", "--", ...holdCommand()]));
    await holder.waitForOutput("ready");

    const marker = join(scratch, unique("marker"));
    const touch = nodeCommand(`require("node:fs").writeFileSync(${JSON.stringify(marker)}, "")`);
    const [skipped, custom, waited, held] = await Promise.all([
      cli.run(run(["--timeout", "0", "busy", "--", ...touch])),
      cli.run(run(["-n", "-E", "9", "-q", "busy", "--", ...touch])),
      cli.run(run(["--timeout", "300ms", "busy", "--", ...touch])),
      cli.run(status("busy")),
    ]);
    expect(skipped.code).toBe(75);
    expectOneLine(skipped.stderr);
    expect(custom).toMatchObject({ code: 9, stderr: "" });
    expect(waited.code).toBe(75);
    expect(() => readFileSync(marker)).toThrow();
    expect(held.code, held.stderr).toBe(1);
    expect(held.stdout).toMatch(/^held: "busy"/);
    if (backend.statusShowsToken) {
      const token = holder.stdout().split(" ")[1]?.trim();
      expect(held.stdout).toContain(`fencing token ${token}`);
    }

    holder.endInput();
    expect((await holder.ended).code).toBe(0);
    const free = await cli.run(status("busy"));
    expect(free.code, free.stderr).toBe(0);
    expect(free.stdout).toMatch(/^free: "busy"/);
    const ran = await cli.run(run(["--timeout", "0", "busy", "--", ...touch]));
    expect(ran.code, ran.stderr).toBe(0);
    readFileSync(marker);
  });

  it("passes SIGTERM on to the command and frees the key", async ({ onTestFinished }) => {
    const { cli, run } = setup(onTestFinished);
    const holder = cli.start(run(["term", "--", ...holdCommand()]));
    await holder.waitForOutput("ready");
    holder.process.kill("SIGTERM");
    const ended = await holder.ended;
    expect(ended.stdout).toContain("got SIGTERM");
    expect(ended.code).toBe(42);
    const next = await cli.run(run(["-n", "term", "--", "true"]));
    expect(next.code, next.stderr).toBe(0);
  });
});

describe("locks run (file backend)", () => {
  /** `locks` for one test, with lock files in a fresh directory. */
  function setup(onTestFinished: (fn: () => Promise<void>) => void) {
    const cli = locksCli(onTestFinished);
    const backend = ["--backend", pathToFileURL(mkdtempSync(join(scratch, "dir-"))).href];
    return { cli, run: (args: string[]) => ["run", ...backend, ...args], backend };
  }

  it("passes the command's exit code through, and 128+N for a signal", async ({
    onTestFinished,
  }) => {
    const { cli, run } = setup(onTestFinished);
    const [seven, killed, sh] = await Promise.all([
      cli.run(run(["seven", "--", ...nodeCommand("process.exit(7)")])),
      cli.run(run(["kill", "--", ...nodeCommand('process.kill(process.pid, "SIGKILL")')])),
      cli.run(run(["sh", "--", "sh", "-c", "exit 0"])),
    ]);
    expect(seven).toMatchObject({ code: 7, stderr: "" });
    expect(killed.code).toBe(137);
    expect(sh.code).toBe(0);
  });

  it("exits 127 when the command does not exist, and frees the key", async ({ onTestFinished }) => {
    const { cli, run } = setup(onTestFinished);
    const missing = await cli.run(run(["k", "--", "no-such-command-xyz"]));
    expect(missing.code).toBe(127);
    expectOneLine(missing.stderr);
    expect(missing.stderr).toContain("no-such-command-xyz");
    expect((await cli.run(run(["-n", "k", "--", "true"]))).code).toBe(0);
  });

  it("lets --shared holders in together, and --limit N holders", async ({ onTestFinished }) => {
    const { cli, run } = setup(onTestFinished);
    const holders = [
      ...[1, 2].map(() => cli.start(run(["--shared", "doc", "--", ...holdCommand()]))),
      ...[1, 2].map(() => cli.start(run(["--limit", "2", "pool", "--", ...holdCommand()]))),
    ];
    await Promise.all(holders.map((holder) => holder.waitForOutput("ready")));
    const [writer, third] = await Promise.all([
      cli.run(run(["-n", "doc", "--", "true"])),
      cli.run(run(["--limit", "2", "-n", "pool", "--", "true"])),
    ]);
    expect(writer.code).toBe(75);
    expect(third.code).toBe(75);
    for (const holder of holders) holder.endInput();
    for (const holder of holders) expect((await holder.ended).code).toBe(0);
  });

  it("waits for the holder, then runs; quiet when stderr is not a terminal", async ({
    onTestFinished,
  }) => {
    const { cli, run } = setup(onTestFinished);
    const holder = cli.start(run(["wait", "--", ...holdCommand()]));
    await holder.waitForOutput("ready");
    const waiter = cli.start(run(["wait", "--", ...nodeCommand("console.log('ran')")]));
    // A fixed wait on purpose: past the second after which a terminal would get a progress line.
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    expect(waiter.stdout()).toBe("");
    holder.endInput();
    expect(await waiter.ended).toMatchObject({ code: 0, stdout: "ran\n", stderr: "" });
  });

  const hasScript = spawnSync("script", ["--version"]).status === 0;
  it.skipIf(!hasScript)(
    "shows a progress line on a terminal after a second of waiting (needs util-linux script(1))",
    async ({ onTestFinished }) => {
      const { cli, run } = setup(onTestFinished);
      const holder = cli.start(run(["tty", "--", ...holdCommand()]));
      await holder.waitForOutput("ready");
      // script(1) gives the waiter a pseudo-terminal as stdin, stdout and stderr.
      const shellQuote = (arg: string): string => `'${arg.replaceAll("'", "'\\''")}'`;
      const line = locksCommandLine(run(["tty", "--", "true"]))
        .map(shellQuote)
        .join(" ");
      const terminal = spawn("script", ["-qec", line, "/dev/null"], {
        env: { ...process.env, LOCKS_BACKEND: "", LOCKS_NAMESPACE: "" },
        stdio: ["pipe", "pipe", "pipe"],
      });
      onTestFinished(() => {
        terminal.kill("SIGKILL");
      });
      let output = "";
      terminal.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        output += chunk;
      });
      const exited = new Promise<number | null>((resolve) => terminal.once("close", resolve));
      await waitFor(() => output.includes('locks: waiting for "tty"... 1s'), {
        timeoutMs: 20_000,
      }).catch((error: unknown) => {
        throw new Error(`no progress line; the terminal showed ${JSON.stringify(output)}`, {
          cause: error,
        });
      });
      holder.endInput();
      expect(await exited).toBe(0);
      // Cleared once the lock is taken.
      expect(output.endsWith("\r\x1b[2K")).toBe(true);
    },
  );

  it("stops waiting on SIGINT: exit 130, the command never runs", async ({ onTestFinished }) => {
    const { cli, run } = setup(onTestFinished);
    const holder = cli.start(run(["int", "--", ...holdCommand()]));
    await holder.waitForOutput("ready");
    const waiter = cli.start(run(["--verbose", "int", "--", ...nodeCommand("console.log('ran')")]));
    await waiter.waitForOutput('"int" is held: waiting', "stderr");
    waiter.process.kill("SIGINT");
    const ended = await waiter.ended;
    expect(ended.code).toBe(130);
    expect(ended.stdout).toBe("");
    expect(holder.process.exitCode).toBeNull();
  });

  it("refuses bad input with exit 2 and one line on stderr", async ({ onTestFinished }) => {
    const { cli, run } = setup(onTestFinished);
    const bad = [
      ["run", "k", "echo", "hi"], // missing --
      ["run", "k", "--"], // no command
      ["run", "--timeout", "soon", "k", "--", "true"], // bad duration
      ["run", "--bogus", "k", "--", "true"], // unknown option
      ["run", "--backend", "ftp://example.com", "k", "--", "true"], // unknown scheme
      ["run", "--backend", "redis://[::1", "k", "--", "true"], // malformed URL
      ["run", "--backend", "etcd://host:99999", "k", "--", "true"], // malformed endpoint
      run(["", "--", "true"]), // empty key (refused by the core)
    ];
    const results = await Promise.all(bad.map((args) => cli.run(args)));
    results.forEach((result, i) => {
      expect(result.code, `locks ${bad[i]?.join(" ")}: ${result.stderr}`).toBe(2);
      expectOneLine(result.stderr);
    });
  });

  it("prints --help and --version", async ({ onTestFinished }) => {
    const { cli } = setup(onTestFinished);
    const [help, runHelp, version] = await Promise.all([
      cli.run(["--help"]),
      cli.run(["run", "--help"]),
      cli.run(["--version"]),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("locks run [options] <key> -- <command>");
    expect(runHelp.stdout).toContain("a bare number is seconds");
    expect(version).toMatchObject({ code: 0, stdout: "0.1.0\n" });
  });

  it("exits 2 with one line when the redis, etcd or postgres server is not there", async ({
    onTestFinished,
  }) => {
    const { cli } = setup(onTestFinished);
    const port = await freePort();
    const urls = [
      `redis://127.0.0.1:${port}`,
      `etcd://127.0.0.1:${port}`,
      `postgres://locks@127.0.0.1:${port}/locks`,
    ];
    const results = await Promise.all(
      urls.map((url) => cli.run(["run", "--backend", url, "-n", "k", "--", "true"])),
    );
    results.forEach((result, i) => {
      expect(result.code, `${urls[i]}: ${result.stderr}`).toBe(2);
      expectOneLine(result.stderr);
    });
  });
});

describe("a lease lost while the command runs", () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it("sends the command SIGTERM, then SIGKILL after --kill-after, and exits 70", async ({
    onTestFinished,
  }) => {
    const cli = locksCli(onTestFinished);
    const stubborn = cli.start([
      "run",
      ...["--backend", server.url, "--ttl", "1s", "--kill-after", "300ms", "lost"],
      ...["--", ...holdCommand({ ignoreTerm: true })],
    ]);
    await stubborn.waitForOutput("ready");
    // The server forgets every lock: the next extension is refused.
    await redisCommand(server.url, ["FLUSHALL"]);
    const ended = await stubborn.ended;
    expect(ended.code).toBe(70);
    expect(ended.stdout).toContain("got SIGTERM");
    expect(ended.stderr).toMatch(/lost the lock on "lost"/);
    expect(ended.stderr).toMatch(/ended by SIGKILL/);
  });

  it("a command that obeys SIGTERM ends at once; locks still exits 70", async ({
    onTestFinished,
  }) => {
    const cli = locksCli(onTestFinished);
    const polite = cli.start([
      "run",
      ...["--backend", server.url, "--ttl", "1s", "lost2", "--", ...holdCommand()],
    ]);
    await polite.waitForOutput("ready");
    await redisCommand(server.url, ["FLUSHALL"]);
    const ended = await polite.ended;
    expect(ended.code).toBe(70);
    expect(ended.stdout).toContain("got SIGTERM");
    expect(ended.stderr).toMatch(/exited with code 42 after the lock was lost/);
  });
});
