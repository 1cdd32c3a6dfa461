import { hostname } from "node:os";
import { describe, expect, it } from "vitest";
import { parseRunArgs } from "../src/args.js";
import { parseBackendUrls } from "../src/backend-url.js";
import { formatDuration, parseDuration } from "../src/duration.js";

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1d", 86_400_000],
    ["1m30s", 90_000],
    ["2.5", 2_500],
    ["0", 0],
    [".5s", 500],
    [" 10s ", 10_000],
    ["1.0005s", 1_001],
  ])("%s is %d ms", (text, ms) => {
    expect(parseDuration(text, "--timeout")).toBe(ms);
  });

  it.each(["", "-1", "1e3", "5x", "s", "1 m", "10sm", "30s5"])("refuses %j", (text) => {
    expect(() => parseDuration(text, "--timeout")).toThrow(/--timeout .* is not a duration/);
  });

  it("refuses more than setTimeout can wait", () => {
    expect(() => parseDuration("25d", "--ttl")).toThrow(/too long/);
  });

  it("formats for messages", () => {
    expect([750, 1_500, 30_000, 90_000, 7_800_000].map(formatDuration)).toEqual([
      "750ms",
      "1.5s",
      "30s",
      "1m30s",
      "2h10m",
    ]);
  });
});

describe("parseBackendUrls", () => {
  it("uses the default directory when none is given", () => {
    expect(parseBackendUrls([], "/run/user/1/locks")).toEqual({
      kind: "file",
      directory: "/run/user/1/locks",
      isDefault: true,
    });
  });

  it("reads file, redis, Redlock, etcd, postgres and mysql URLs", () => {
    expect(parseBackendUrls(["file:///var/lock/app"], "/d")).toEqual({
      kind: "file",
      directory: "/var/lock/app",
      isDefault: false,
    });
    expect(parseBackendUrls(["redis://:pw@h:6379/2"], "/d")).toEqual({
      kind: "redis",
      urls: ["redis://:pw@h:6379/2"],
    });
    expect(parseBackendUrls(["redis://a", "rediss://b", "redis://c"], "/d")).toEqual({
      kind: "redis",
      urls: ["redis://a", "rediss://b", "redis://c"],
    });
    expect(parseBackendUrls(["etcd://a:2379,[::1]:2380,b"], "/d")).toEqual({
      kind: "etcd",
      hosts: ["http://a:2379", "http://[::1]:2380", "http://b:2379"],
    });
    expect(parseBackendUrls(["etcds://u:p%40ss@a:2379"], "/d")).toEqual({
      kind: "etcd",
      hosts: ["https://a:2379"],
      auth: { username: "u", password: "p@ss" },
    });
    expect(parseBackendUrls(["postgresql://u@db/app"], "/d")).toEqual({
      kind: "postgres",
      connectionString: "postgresql://u@db/app",
    });
    expect(parseBackendUrls(["mysql://u:pw@db:3306/app"], "/d")).toEqual({
      kind: "mysql",
      uri: "mysql://u:pw@db:3306/app",
    });
    expect(parseBackendUrls(["mariadb://u@db/app"], "/d")).toEqual({
      kind: "mysql",
      uri: "mysql://u@db/app",
    });
  });

  it.each([
    [["ftp://x"], /unknown backend scheme "ftp:"/],
    [["/var/lock"], /is not a URL/],
    [["localhost:6379"], /unknown backend scheme "localhost:"/],
    [["file://host/x"], /malformed/],
    [["file:///"], /malformed/],
    [["file:"], /no directory/],
    [["file:~/locks"], /~ is not expanded/],
    [["file:locks#1"], /no query or fragment/],
    [["file:///var/lock?x"], /no query or fragment/],
    [["redis://"], /malformed/],
    [["etcd://a:0"], /bad endpoint/],
    [["etcd://a/path"], /no path/],
    [["file:///a", "redis://b"], /only for Redlock/],
  ])("refuses %j", (values, message) => {
    expect(() => parseBackendUrls(values, "/d")).toThrow(message);
  });

  it("keeps passwords out of messages", () => {
    expect(() => parseBackendUrls(["redis://:s3cret@[bad"], "/d")).toThrow(/redis:\/\/:\*\*\*@/);
  });
});

describe("relative file: URLs", () => {
  it("resolves a path without // against the working directory, never the root", () => {
    const cwd = "/home/u/project";
    const directory = (value: string): unknown => {
      const spec = parseBackendUrls([value], "/d", cwd);
      return spec.kind === "file" ? spec.directory : spec;
    };
    expect(directory("file:relative/dir")).toBe("/home/u/project/relative/dir");
    expect(directory("file:./locks/")).toBe("/home/u/project/locks");
    expect(directory("file:../shared")).toBe("/home/u/shared");
    expect(directory("file:my%20locks")).toBe("/home/u/project/my locks");
    // With a leading slash it is absolute, as before.
    expect(directory("file:/var/lock/app")).toBe("/var/lock/app");
    expect(directory("file:///var/lock/app")).toBe("/var/lock/app");
  });
});

describe("Redlock servers", () => {
  it.each([
    [["redis://a", "redis://b", "redis://a"]],
    [["redis://cache-1:6379", "redis://CACHE-1"]],
    [["redis://a.example.com.", "redis://a.example.com:6379"]],
    [["redis://127.0.0.1:7000/0", "redis://127.0.0.1:7000/3"]],
    [["redis://127.1:7000", "rediss://127.0.0.1:7000"]],
    [["redis://[::1]:7000", "redis://[0:0::1]:7000"]],
    [["redis://:one@h", "redis://user:two@h:6379/1"]],
  ])("refuses one server twice: %j", (urls) => {
    expect(() => parseBackendUrls(urls, "/d")).toThrow(/are the same server .*distinct servers/);
  });

  it("keeps passwords out of that message", () => {
    expect(() => parseBackendUrls(["redis://:s3cret@h", "redis://:s3cret@h"], "/d")).toThrow(
      /^(?!.*s3cret)/,
    );
  });

  it("accepts distinct servers, and names it cannot tell apart without resolving them", () => {
    const urls = [
      "redis://localhost",
      "redis://127.0.0.1",
      "redis://127.0.0.1:6380",
      "redis://[::1]",
    ];
    expect(parseBackendUrls(urls, "/d")).toEqual({ kind: "redis", urls });
  });
});

describe("run options", () => {
  it("labels the lock host:pid of locks unless --holder says otherwise; --min-hold is a duration", () => {
    const args = (argv: string[]) => parseRunArgs([...argv, "k", "--", "true"], {});
    expect(args([])).toMatchObject({ holder: `${hostname()}:${process.pid}`, minHoldMs: 0 });
    expect(args(["--holder", "web 1", "--min-hold", "1m"])).toMatchObject({
      holder: "web 1",
      minHoldMs: 60_000,
    });
  });

  it("reads options as node:util's parseArgs does: --name value, --name=value, -n value, -nvalue, grouped shorts", () => {
    const args = (argv: string[]) => parseRunArgs(argv, {});
    expect(args(["-nq", "k", "--", "true"])).toMatchObject({ timeoutMs: 0, quiet: true });
    expect(args(["-t5", "k", "--", "true"])).toMatchObject({ timeoutMs: 5_000 });
    expect(args(["-vt", "2s", "k", "--", "true"])).toMatchObject({
      timeoutMs: 2_000,
      verbose: true,
    });
    expect(args(["-qt1m", "k", "--", "true"])).toMatchObject({ timeoutMs: 60_000, quiet: true });
    expect(
      args([
        "k",
        "--ttl=30s",
        "-b",
        "redis://a",
        "--backend",
        "redis://b",
        "-bredis://c",
        "--",
        "x",
        "-n",
      ]),
    ).toMatchObject({
      key: "k",
      ttlMs: 30_000,
      backend: { kind: "redis", urls: ["redis://a", "redis://b", "redis://c"] },
      command: "x",
      args: ["-n"],
      timeoutMs: Number.POSITIVE_INFINITY,
    });
    // A lone "-" is an argument, the last of several values wins, options after -- are the command's.
    expect(args(["--timeout", "1s", "-t", "3s", "-", "--", "-", "--timeout"])).toMatchObject({
      key: "-",
      timeoutMs: 3_000,
      command: "-",
      args: ["--timeout"],
    });
  });

  const problem = (argv: string[]): string => {
    try {
      parseRunArgs(argv, {});
    } catch (error) {
      return (error as Error).message;
    }
    return "accepted";
  };

  it.each([
    [
      ["-t", "-1", "k", "--", "true"],
      /^locks run: -t needs a value, and "-1" looks like an option: write --timeout=-1 if it is the value/,
    ],
    [
      ["--timeout", "-5s", "k", "--", "true"],
      /^locks run: --timeout needs a value, and "-5s" looks like/,
    ],
    [
      ["--limit", "-2", "k", "--", "true"],
      /^locks run: --limit needs a value, and "-2" looks like/,
    ],
    [["k", "--", "true", "--timeout"], /accepted/],
    [["--timeout"], /^locks run: --timeout needs a value \(see locks run --help\)$/],
    [["--quiet=yes", "k", "--", "true"], /^locks run: --quiet takes no value \(see/],
    [["--bogus", "k", "--", "true"], /^locks run: unknown option --bogus \(see/],
    [["-x", "k", "--", "true"], /^locks run: unknown option -x \(see/],
    [["-nx", "k", "--", "true"], /^locks run: unknown option -x \(see/],
    [["-q=1", "k", "--", "true"], /^locks run: unknown option -= \(see/],
    [["--", "true"], /^locks run: missing <key> before --/],
    [["--timeout=-1", "k", "--", "true"], /^locks: |^--timeout "-1" is not a duration/],
  ])("%j: one line in our words", (argv, expected) => {
    const message = problem(argv);
    expect(message).toMatch(expected);
    expect(message).not.toMatch(/\n|XYZ|ambiguous|Did you forget/);
  });
});
