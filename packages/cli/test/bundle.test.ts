import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

/*
 * What the `locks` bin loads: build.mjs's CommonJS bundles (test/bin-setup.ts
 * builds them for the run, inside node_modules, so that they resolve @locks/*
 * as dist/ would), and nothing a command does not need.
 */

const run = promisify(execFile);
const bin = inject("locksBin");
const dist = dirname(bin);
let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "locks-bundle-"));
  // Lists, at exit, the bundles and driver entry files the process loaded.
  await writeFile(
    join(scratch, "loaded.cjs"),
    `process.on("exit", () => process.stderr.write("loaded " + JSON.stringify(Object.keys(require.cache)) + "\\n"));`,
  );
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Runs the bundled `locks`; resolves with its exit code, output and the files it loaded. */
async function locks(args: readonly string[], compileCache = join(scratch, "compile-cache")) {
  const result = await run(process.execPath, ["-r", join(scratch, "loaded.cjs"), bin, ...args], {
    env: {
      ...process.env,
      LOCKS_BACKEND: "",
      LOCKS_NAMESPACE: "",
      LOCKS_COMPILE_CACHE: compileCache,
    },
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
  const loaded = JSON.parse(/^loaded (.*)$/m.exec(result.stderr)?.[1] ?? "[]") as string[];
  return { ...result, loaded };
}

const bundles = (loaded: readonly string[]): string[] =>
  loaded
    .filter((file) => file.startsWith(dist))
    .map((file) => file.slice(dist.length + 1))
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
    // proper-lockfile and ioredis are bundled into file.cjs and redis.cjs: nothing is loaded from node_modules.
    ["file", () => `file://${scratch}/locks`, undefined],
    ["redis", () => inject("redisUrl"), undefined],
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
      expect(drivers(ran.loaded)).toEqual(driver === undefined ? [] : [driver]);

      const status = await locks(["status", ...where, "k"]);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toContain('free: "k"');
    },
  );
});

describe("the code cache of the bundles (compile-cache.ts)", () => {
  /** The cache files in `directory`, with their modification times. */
  async function cacheFiles(directory: string): Promise<Map<string, number>> {
    const names = (await readdir(directory)).filter((name) => name.endsWith(".v8"));
    const stats = await Promise.all(names.map((name) => stat(join(directory, name))));
    return new Map(
      names.map((name, i) => [name.replace(/-[0-9a-f]{8}\.v8$/, ""), stats[i]!.mtimeMs]),
    );
  }

  const file = (): string => `file://${scratch}/locks`;

  it("is made in a private directory at the first run, then used as it is", async () => {
    const directory = join(scratch, `cache-${randomBytes(4).toString("hex")}`);
    // Not for --help and --version, which load little.
    expect((await locks(["--version"], directory)).code).toBe(0);
    await expect(stat(directory)).rejects.toMatchObject({ code: "ENOENT" });

    const ran = await locks(["run", "--backend", file(), "k", "--", "true"], directory);
    expect((await stat(directory)).mode & 0o777).toBe(0o700);
    expect(ran.code, ran.stderr).toBe(0);
    const made = await cacheFiles(directory);
    expect([...made.keys()].sort()).toEqual(["core.cjs", "file.cjs", "lib.cjs"]);

    // Accepted by V8, so not written again.
    const again = await locks(["run", "--backend", file(), "k", "--", "true"], directory);
    expect(again.code, again.stderr).toBe(0);
    expect(await cacheFiles(directory)).toEqual(made);
  });

  it("is remade when it names another build of a bundle or V8 refuses it", async () => {
    const directory = join(scratch, `cache-${randomBytes(4).toString("hex")}`);
    const status = ["status", "--backend", file(), "k"];
    expect((await locks(status, directory)).code).toBe(0);
    const name = (await readdir(directory)).find((entry) => entry.startsWith("lib.cjs-"));
    const path = join(directory, name!);
    const good = await readFile(path);
    const keyEnd = good.indexOf(10);
    for (const bad of [
      // Another build: the key line names another file identity.
      Buffer.concat([Buffer.from("v0 another build\n"), good.subarray(keyEnd + 1)]),
      // This build's key, but data V8 refuses.
      Buffer.concat([good.subarray(0, keyEnd + 1), Buffer.alloc(good.length - keyEnd - 1, 7)]),
    ]) {
      await writeFile(path, bad);
      const out = await locks(status, directory);
      expect(out.stdout).toMatch(/^free: "k"/);
      expect((await readFile(path)).subarray(0, keyEnd + 1)).toEqual(good.subarray(0, keyEnd + 1));
      expect((await readFile(path)).equals(bad)).toBe(false);
    }
  });

  it("is not used in a directory others can write to, nor with LOCKS_COMPILE_CACHE=0", async () => {
    const directory = join(scratch, `cache-${randomBytes(4).toString("hex")}`);
    await mkdir(directory);
    await chmod(directory, 0o777);
    const out = await locks(["status", "--backend", file(), "k"], directory);
    expect(out.code, out.stderr).toBe(0);
    expect(await readdir(directory)).toEqual([]);

    const off = await locks(["status", "--backend", file(), "k"], "0");
    expect(off.stdout).toMatch(/^free: "k"/);
  });
});
