import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { assertHistory, type HoldRecord } from "@locks/core/history";
import {
  freePort,
  type RedisServer,
  redisCommand,
  startRedis,
  startRedisGroup,
  waitFor,
} from "@locks/testkit";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  appendCommand,
  hasScript,
  holdCommand,
  locksCli,
  nodeCommand,
  onTerminal,
  type TerminalLocks,
} from "./spawn.js";

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

/** How long a `locks` process may take to show something on a loaded machine (each one compiles its TypeScript). */
const SLOW_MS = 60_000;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** What a terminal shows for "clear this line": back to its start, erase it. */
const CLEAR_LINE = "\r\x1b[2K";

/**
 * Waits until the terminal shows the progress line of a wait for `key` that
 * has lasted a second or more. Whole seconds, never "0ms": the line appears
 * only after a second, but a loaded machine may run its first draw late
 * ("2s").
 */
async function waitForProgress(terminal: TerminalLocks, key: string): Promise<void> {
  const line = new RegExp(
    `locks: waiting for ${escapeRegExp(JSON.stringify(key))}\\.\\.\\. [1-9]\\d*s`,
  );
  await waitFor(() => line.test(terminal.output()), { timeoutMs: SLOW_MS }).catch(
    (error: unknown) => {
      throw new Error(
        `no progress line; the terminal showed ${JSON.stringify(terminal.output())}`,
        {
          cause: error,
        },
      );
    },
  );
}

/**
 * The terminal's output ends with `message` alone on a line that was cleared
 * first (not written onto the progress line), and nothing cleared it after.
 */
function expectLastLine(output: string, message: string): void {
  const expected = `${CLEAR_LINE}${message}\r\n`;
  expect(output.endsWith(expected), `the terminal showed ${JSON.stringify(output)}`).toBe(true);
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A command that prints "ready", says "got SIGUSR1" for each one, and holds until its stdin ends. */
const usr1Command = nodeCommand(
  `process.on("SIGUSR1", () => process.stdout.write("got SIGUSR1\\n"));
   process.stdin.on("end", () => process.exit(0)).resume();
   setTimeout(() => process.exit(3), 300_000);
   process.stdout.write("ready\\n");`,
);

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
  /** The backend's `semaphore` capability (`--limit` above 1). */
  readonly semaphore: boolean;
}

const cases: BackendCase[] = [
  {
    name: "file (default directory)",
    backendArgs: () => [],
    env: () => ({ XDG_RUNTIME_DIR: scratch }),
    semaphore: true,
  },
  {
    name: "redis",
    backendArgs: () => ["--backend", inject("redisUrl")],
    semaphore: true,
  },
  {
    name: "redis (Redlock over 3 servers)",
    backendArgs: () => redlockServers.flatMap((server) => ["--backend", server.url]),
    semaphore: false,
  },
  {
    name: "etcd",
    backendArgs: () => [
      "--backend",
      `etcd://${inject("etcdEndpoints")
        .map((endpoint) => endpoint.replace(/^https?:\/\//, ""))
        .join(",")}`,
    ],
    semaphore: true,
  },
  {
    name: "postgres",
    backendArgs: () => ["--backend", inject("databaseUrl")],
    semaphore: true,
  },
  {
    name: "mysql",
    backendArgs: () => ["--backend", inject("mysqlUrl")],
    semaphore: false,
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
    expect(skipped.code, skipped.stderr).toBe(75);
    expectOneLine(skipped.stderr);
    expect(custom).toMatchObject({ code: 9, stderr: "" });
    expect(waited.code, waited.stderr).toBe(75);
    expect(() => readFileSync(marker)).toThrow();
    expect(held.code, held.stderr).toBe(1);
    expect(held.stdout).toMatch(/^held: "busy"/);
    // Labelled, by default, with the host name and pid of the `locks` that holds it.
    expect(held.stdout).toContain(`holder ${hostname()}:${holder.process.pid}, exclusive`);
    const token = holder.stdout().split(" ")[1]?.trim();
    expect(held.stdout).toContain(`fencing token ${token}`);

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

  it.skipIf(!backend.semaphore)(
    "status shows semaphore holders with the key's limit; another --limit is refused (exit 2) (capability semaphore)",
    async ({ onTestFinished }) => {
      const { cli, run, status } = setup(onTestFinished);
      const holders = [1, 2].map(() =>
        cli.start(run(["--limit", "2", "pool", "--", ...holdCommand()])),
      );
      await Promise.all(holders.map((holder) => holder.waitForOutput("ready")));
      const [shown, json, tried, waited] = await Promise.all([
        cli.run(status("pool")),
        cli.run([...status("pool"), "--json"]),
        cli.run(run(["--limit", "3", "-n", "pool", "--", "true"])),
        // Refused at once, not after the wait: the holders' limit is the problem, not their number.
        cli.run(run(["--limit", "3", "--timeout", "20s", "pool", "--", "true"])),
      ]);
      expect(shown.code, shown.stderr).toBe(1);
      expect(shown.stdout).toMatch(/^held: "pool" \(.*\): semaphore 2\/2\n/);
      expect(shown.stdout.match(/^ {2}holder \S+, semaphore, /gm), shown.stdout).toHaveLength(2);
      expect(shown.stdout).not.toMatch(/exclusive/);
      expect(JSON.parse(json.stdout)).toMatchObject({
        held: true,
        limit: 2,
        holders: [{ mode: "exclusive" }, { mode: "exclusive" }],
      });
      for (const refused of [tried, waited]) {
        expect(refused.code, refused.stderr).toBe(2);
        expectOneLine(refused.stderr);
        expect(refused.stderr).toMatch(/"pool".*limit 3 differs from the limit 2/);
      }
      for (const holder of holders) holder.endInput();
      for (const holder of holders) expect((await holder.ended).code).toBe(0);
    },
  );

  it("refuses a --ttl below the backend's floor at once, without running the command", async ({
    onTestFinished,
  }) => {
    const { cli, run } = setup(onTestFinished);
    const ended = await cli.run(
      run(["--ttl", "1ms", "--timeout", "1s", "tiny", "--", "echo", "ran"]),
    );
    expect(ended.code, ended.stderr).toBe(2);
    expectOneLine(ended.stderr);
    expect(ended.stderr).toMatch(
      /--ttl 1ms is shorter than \S+, the shortest lease the \w+ backend/,
    );
    expect(ended.stdout).toBe("");
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
    const ran = ["echo", "ran"];
    // Two seconds of waiting by its own clock, past the second after which a
    // terminal gets a progress line: on a pipe, only the final message.
    const quiet = await cli.run(run(["--timeout", "2s", "wait", "--", ...ran]));
    expect(quiet).toMatchObject({
      code: 75,
      stdout: "",
      stderr: 'locks: "wait" is still held after 2s: echo was not run\n',
    });
    // A waiter that is waiting (it says so) runs once the holder ends.
    const waiter = cli.start(run(["--verbose", "wait", "--", ...ran]));
    await waiter.waitForOutput('"wait" is held: waiting', "stderr");
    expect(waiter.stdout()).toBe("");
    holder.endInput();
    expect(await waiter.ended).toMatchObject({ code: 0, stdout: "ran\n" });
  });

  it.skipIf(!hasScript)(
    "shows a progress line on a terminal after a second of waiting (needs util-linux script(1))",
    async ({ onTestFinished }) => {
      const { cli, run } = setup(onTestFinished);
      const holder = cli.start(run(["tty", "--", ...holdCommand()]));
      await holder.waitForOutput("ready");
      const terminal = onTerminal(run(["tty", "--", "true"]), onTestFinished);
      await waitForProgress(terminal, "tty");
      holder.endInput();
      expect(await terminal.exited).toBe(0);
      // Cleared once the lock is taken.
      expect(terminal.output().endsWith(CLEAR_LINE)).toBe(true);
    },
  );

  it.skipIf(!hasScript)(
    "on a terminal, clears the progress line before saying the key is still held",
    async ({ onTestFinished }) => {
      const { cli, run } = setup(onTestFinished);
      const holder = cli.start(run(["late", "--", ...holdCommand()]));
      await holder.waitForOutput("ready");
      // Long enough that the progress line comes first even when the first attempt is slow.
      const terminal = onTerminal(run(["--timeout", "5s", "late", "--", "true"]), onTestFinished);
      await waitForProgress(terminal, "late");
      expect(await terminal.exited).toBe(75);
      // The message starts a cleared line, and nothing clears it afterwards.
      expectLastLine(terminal.output(), 'locks: "late" is still held after 5s: true was not run');
    },
  );

  it.skipIf(!hasScript)(
    "on a terminal, clears the progress line before saying Ctrl-C stopped the wait",
    async ({ onTestFinished }) => {
      const { cli, run } = setup(onTestFinished);
      const holder = cli.start(run(["ctrl-c", "--", ...holdCommand()]));
      await holder.waitForOutput("ready");
      const terminal = onTerminal(run(["ctrl-c", "--", "true"]), onTestFinished);
      await waitForProgress(terminal, "ctrl-c");
      terminal.type("\x03");
      expect(await terminal.exited).toBe(130);
      expectLastLine(
        terminal.output(),
        'locks: SIGINT while waiting for "ctrl-c": true was not run',
      );
      expect(holder.process.exitCode).toBeNull();
    },
  );

  it("passes SIGUSR1 on to the command and never opens Node's inspector", async ({
    onTestFinished,
  }) => {
    // Where Node would open its inspector: a free port rather than 9229, which another test may use.
    const inspectorPort = await freePort();
    const inspect = `--inspect-port=127.0.0.1:${inspectorPort}`;
    const cli = locksCli(onTestFinished, {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} ${inspect}`.trim(),
    });
    const backend = ["--backend", pathToFileURL(mkdtempSync(join(scratch, "dir-"))).href];
    const holder = cli.start(["run", ...backend, "usr1", "--", ...usr1Command]);
    await holder.waitForOutput("ready");
    holder.process.kill("SIGUSR1");
    await holder.waitForOutput("got SIGUSR1");

    // While waiting, SIGUSR1 stops the wait as the other signals do.
    const waiter = cli.start(["run", ...backend, "--verbose", "usr1", "--", "echo", "ran"]);
    await waiter.waitForOutput('"usr1" is held: waiting', "stderr");
    waiter.process.kill("SIGUSR1");
    const stopped = await waiter.ended;
    expect(stopped.code, stopped.stderr).toBe(128 + 10);
    expect(stopped.stdout).toBe("");

    expect(await listening(inspectorPort)).toBe(false);
    holder.endInput();
    const ended = await holder.ended;
    expect(ended.code, ended.stderr).toBe(0);
    for (const stderr of [ended.stderr, stopped.stderr]) {
      expect(stderr).not.toMatch(/Debugger listening/);
    }
  });

  it("resolves a relative file: URL against the working directory", async ({ onTestFinished }) => {
    const cwd = mkdtempSync(join(scratch, "cwd-"));
    const relative = unique("rel");
    const cli = locksCli(onTestFinished, {}, cwd);
    const ended = await cli.run(["run", "-b", `file:${relative}/locks`, "k", "--", "true"]);
    expect(ended.code, ended.stderr).toBe(0);
    expect(existsSync(join(cwd, relative, "locks"))).toBe(true);
    expect(existsSync(join("/", relative))).toBe(false);
  });

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
      ["run", "-t", "-1", "k", "--", "true"], // a value that looks like an option
      ["run", "--timeout", "k", "--", "true"], // (the key taken as the value; then no key)
      ["run", "--quiet=1", "k", "--", "true"], // a value for a flag
      // One server twice (case, default port, database): a quorum over one server is no quorum.
      [
        "run",
        "-b",
        "redis://Db1",
        "-b",
        "redis://db1:6379/2",
        "-b",
        "redis://db2",
        "k",
        "--",
        "true",
      ],
      ["run", "-b", "file:~/locks", "k", "--", "true"], // ~ is not expanded
      run(["--holder", "", "k", "--", "true"]), // an empty label (the core's rule, before any I/O)
      run(["--holder", "é".repeat(129), "k", "--", "true"]), // 258 UTF-8 bytes
      ["run", "--min-hold", "soon", "k", "--", "true"], // bad duration
      ["release", "k"], // no --force
      ["release", "--force"], // no key
    ];
    const results = await Promise.all(bad.map((args) => cli.run(args)));
    results.forEach((result, i) => {
      expect(result.code, `locks ${bad[i]?.join(" ")}: ${result.stderr}`).toBe(2);
      expectOneLine(result.stderr);
      expect(result.stderr).not.toMatch(/XYZ|ambiguous/);
    });
    expect(results[8]?.stderr).toMatch(/-t needs a value, and "-1" looks like an option/);
    expect(results[11]?.stderr).toMatch(/are the same server \(db1:6379\)/);
    expect(results[13]?.stderr).toMatch(/--holder must not be empty/);
    expect(results[14]?.stderr).toMatch(/--holder must be at most 256 UTF-8 bytes/);
    expect(results[16]?.stderr).toMatch(/only --force exists.*locks release --force k /);
  });

  it("prints --help and --version", async ({ onTestFinished }) => {
    const { cli } = setup(onTestFinished);
    const [help, runHelp, releaseHelp, version] = await Promise.all([
      cli.run(["--help"]),
      cli.run(["run", "--help"]),
      cli.run(["help", "release"]),
      cli.run(["--version"]),
    ]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("locks run [options] <key> -- <command>");
    expect(runHelp.stdout).toContain("a bare number is seconds");
    expect(runHelp.stdout).toContain("--min-hold <duration>");
    expect(releaseHelp).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^Usage: locks release --force/),
    });
    expect(version).toMatchObject({ code: 0, stdout: "0.1.0\n" });
  });

  it("exits 2 with one line when the redis, etcd, postgres or mysql server is not there", async ({
    onTestFinished,
  }) => {
    const { cli } = setup(onTestFinished);
    const port = await freePort();
    const urls = [
      `redis://127.0.0.1:${port}`,
      `etcd://127.0.0.1:${port}`,
      `postgres://locks@127.0.0.1:${port}/locks`,
      `mysql://locks@127.0.0.1:${port}/locks`,
    ];
    const results = await Promise.all(
      urls.map((url) => cli.run(["run", "--backend", url, "-n", "k", "--", "true"])),
    );
    results.forEach((result, i) => {
      expect(result.code, `${urls[i]}: ${result.stderr}`).toBe(2);
      expectOneLine(result.stderr);
      // Which server, and the plain cause: no client library's internals.
      expect(result.stderr, urls[i]).toContain(`127.0.0.1:${port}`);
      expect(result.stderr, urls[i]).not.toMatch(/Stream isn't writeable|Resolution note/);
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
      // A kill-after long enough for a loaded machine to run the command's SIGTERM handler first.
      ...["--backend", server.url, "--ttl", "1s", "--kill-after", "2s", "lost"],
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
