import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

/*
 * The other tests run the TypeScript sources; these run what the `locks` bin
 * runs: build.mjs's CommonJS bundles, built here into a directory of their own
 * (inside node_modules, so that the bundles resolve @locks/* as dist/ would).
 */

const run = promisify(execFile);
const PACKAGE = fileURLToPath(new URL("..", import.meta.url));
let root: string;
let bin: string;
let scratch: string;

beforeAll(async () => {
  const cache = join(PACKAGE, "node_modules", ".cache");
  await mkdir(cache, { recursive: true });
  root = await mkdtemp(join(cache, "bundle-test-"));
  // version.ts reads the package.json next to the bundles' directory.
  await copyFile(join(PACKAGE, "package.json"), join(root, "package.json"));
  await run(process.execPath, [join(PACKAGE, "build.mjs"), join(root, "dist")], { cwd: PACKAGE });
  bin = join(root, "dist", "cli.cjs");
  scratch = await mkdtemp(join(tmpdir(), "locks-bundle-"));
  // Lists, at exit, the bundles and driver entry files the process loaded.
  await writeFile(
    join(scratch, "loaded.cjs"),
    `process.on("exit", () => process.stderr.write("loaded " + JSON.stringify(Object.keys(require.cache)) + "\\n"));`,
  );
}, 60_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await rm(scratch, { recursive: true, force: true });
});

/** Runs the bundled `locks`; resolves with its exit code, output and the files it loaded. */
async function locks(args: readonly string[]) {
  const result = await run(process.execPath, ["-r", join(scratch, "loaded.cjs"), bin, ...args], {
    env: { ...process.env, LOCKS_BACKEND: "", LOCKS_NAMESPACE: "" },
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
  const loaded = JSON.parse(/^loaded (.*)$/m.exec(result.stderr)?.[1] ?? "[]") as string[];
  return { ...result, loaded };
}

const bundles = (loaded: readonly string[]): string[] =>
  loaded
    .filter((file) => file.startsWith(join(root, "dist")))
    .map((file) => file.slice(join(root, "dist").length + 1))
    .sort();

const DRIVERS = ["proper-lockfile", "ioredis", "etcd3", "pg", "mysql2"];
const drivers = (loaded: readonly string[]): string[] =>
  DRIVERS.filter((driver) => loaded.some((file) => file.includes(`/node_modules/${driver}/`)));

describe("the bundled bin", () => {
  it("--version loads the CLI and nothing of the core or a backend", async () => {
    const out = await locks(["--version"]);
    expect(out.code).toBe(0);
    expect(out.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(bundles(out.loaded)).toEqual(["cli.cjs", "lib.cjs"]);
  });

  it.each([
    ["file", () => `file://${scratch}/locks`, "proper-lockfile"],
    ["redis", () => inject("redisUrl"), "ioredis"],
    ["etcd", () => `etcd://${inject("etcdEndpoints")[0]!.replace(/^https?:\/\//, "")}`, "etcd3"],
    ["postgres", () => inject("databaseUrl"), "pg"],
    ["mysql", () => inject("mysqlUrl"), "mysql2"],
  ])(
    "runs a command and reads status on %s, loading that backend and its driver only",
    async (name, url, driver) => {
      const where = ["--backend", url(), "--namespace", `bundle-${randomBytes(6).toString("hex")}`];
      const ran = await locks([
        "run",
        ...where,
        "k",
        "--",
        process.execPath,
        "-e",
        "console.log('token ' + process.env.LOCKS_FENCING_TOKEN)",
      ]);
      expect(ran.code, ran.stderr).toBe(0);
      expect(ran.stdout).toMatch(/^token \d+$/m);
      expect(bundles(ran.loaded)).toEqual(["cli.cjs", "core.cjs", `${name}.cjs`, "lib.cjs"].sort());
      expect(drivers(ran.loaded)).toEqual([driver]);

      const status = await locks(["status", ...where, "k"]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain('free: "k"');
    },
  );
});
