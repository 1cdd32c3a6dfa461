import { describe, expect, it } from "vitest";
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

  it("reads file, redis, Redlock, etcd and postgres URLs", () => {
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
  });

  it.each([
    [["ftp://x"], /unknown backend scheme "ftp:"/],
    [["/var/lock"], /is not a URL/],
    [["localhost:6379"], /unknown backend scheme "localhost:"/],
    [["file://host/x"], /malformed/],
    [["file:///"], /malformed/],
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
