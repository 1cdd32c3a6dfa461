/**
 * What a user gets from the registry: every published package is packed with
 * `pnpm pack` (which rewrites "workspace:" ranges), linted as a tarball with
 * publint and attw, installed with npm into fresh projects and used there
 * from plain ESM and CommonJS scripts.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
// The ProvidedContext types of inject("redisUrl") etc.
import type {} from "@locks/testkit";
import { publint } from "publint";
import { formatMessage } from "publint/utils";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = (name: string) =>
  fileURLToPath(new URL(`../node_modules/.bin/${name}`, import.meta.url));

/** The packages published to npm (testkit, bench, docs, chaos and this one stay private). */
const published = ["core", "thread", "file", "redis", "etcd", "postgres", "mysql", "cli"] as const;
type Published = (typeof published)[number];

let work: string;
const tarballs = {} as Record<Published, string>;

/** Runs a command; on failure the error carries its stdout and stderr. */
async function sh(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  try {
    return await run(file, args, {
      cwd,
      env: { ...process.env, ...env },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${file} ${args.join(" ")} failed: ${e.message}\n${e.stdout}\n${e.stderr}`);
  }
}

/** A fresh npm project in `work` with the given tarballs installed from disk. */
async function npmProject(name: string, pkgs: readonly Published[]): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir);
  await writeFile(
    join(dir, "package.json"),
    JSON.stringify({ name: `packaging-${name}`, private: true, type: "module" }),
  );
  await sh(
    "npm",
    [
      "install",
      ...pkgs.map((p) => tarballs[p]),
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      "--loglevel=error",
    ],
    dir,
  );
  return dir;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "locks-packaging-"));
  const packs = join(work, "packs");
  // The packages' dist/ is built by turbo (this task dependsOn ^build). `pnpm pack:all` is the
  // command the docs' Installing page gives users: it packs every non-private package.
  const { stdout } = await sh("pnpm", ["pack:all", packs], root);
  const paths = stdout.split("\n").filter((line) => line.endsWith(".tgz"));
  for (const path of paths) {
    const name = /\/locks-([a-z]+)-\d[^/]*\.tgz$/.exec(path)?.[1];
    if (name !== undefined) tarballs[name as Published] = path;
  }
  expect(Object.keys(tarballs).sort()).toEqual([...published].sort());
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function packedManifest(p: Published): Promise<Record<string, unknown>> {
  const { stdout } = await sh("tar", ["-xOzf", tarballs[p], "package/package.json"], work);
  return JSON.parse(stdout) as Record<string, unknown>;
}

async function packedFiles(p: Published): Promise<string[]> {
  const { stdout } = await sh("tar", ["-tzf", tarballs[p]], work);
  return stdout.split("\n").filter(Boolean);
}

/** The entry points of a packed manifest (`"exports"` without ./package.json) and their files. */
function exportTargets(
  manifest: Record<string, unknown>,
): Record<string, { types: string; default: string }> {
  const exports = manifest.exports as Record<string, unknown>;
  const targets: Record<string, { types: string; default: string }> = {};
  for (const [subpath, target] of Object.entries(exports)) {
    if (subpath === "./package.json") continue;
    targets[subpath] = target as { types: string; default: string };
  }
  return targets;
}

/** The part of `attw --format json` read here. */
interface AttwAnalysis {
  entrypoints: Record<
    string,
    {
      resolutions: Record<
        string,
        {
          resolution?: { fileName: string };
          implementationResolution?: { fileName: string };
        }
      >;
    }
  >;
  problems: Array<{ kind: string; entrypoint?: string; resolutionKind?: string }>;
}

describe.each(published)("@locks/%s tarball", (p) => {
  it("has no workspace: ranges, a node engine, dist with types, a README, no tests", async () => {
    const manifest = await packedManifest(p);
    expect(JSON.stringify(manifest)).not.toContain("workspace:");
    expect(manifest.engines).toEqual({ node: ">=20.19" });
    expect(manifest.sideEffects).toBe(false);
    expect(manifest.private).toBeUndefined();
    // Backends share the user's @locks/core (a peer); the cli is an application and brings its own.
    const coreField = p === "cli" ? "dependencies" : "peerDependencies";
    if (p !== "core")
      expect(manifest[coreField]).toMatchObject({ "@locks/core": expect.stringMatching(/^\^\d/) });
    const files = await packedFiles(p);
    expect(files).toContain("package/README.md");
    expect(files).toContain("package/dist/index.js");
    expect(files).toContain("package/dist/index.d.ts");
    expect(files.filter((f) => /(^|\/)test\/|\.test\.[cm]?[jt]s$/.test(f))).toEqual([]);
    // Every entry point ships its ESM file and its types.
    for (const [subpath, target] of Object.entries(exportTargets(manifest))) {
      expect(files, `${subpath} types`).toContain(`package/${target.types.replace(/^\.\//, "")}`);
      expect(files, `${subpath} default`).toContain(
        `package/${target.default.replace(/^\.\//, "")}`,
      );
      expect(target.types, subpath).toMatch(/\.d\.ts$/);
      expect(target.default, subpath).toMatch(/\.js$/);
    }
  });

  it("has no side effect on import: no global or built-in defined (sideEffects: false)", async () => {
    const { stdout } = await sh(
      "tar",
      ["-xOzf", tarballs[p], "--wildcards", "package/dist/*.js"],
      work,
    );
    // The Symbol.asyncDispose polyfill was the last: every supported Node has the symbol.
    expect(stdout).not.toMatch(/defineProperty\(\s*(Symbol|globalThis)\b/);
    expect(stdout).not.toMatch(/\bglobalThis\.\w+\s*=[^=]/);
  });

  it("passes publint (no errors or warnings)", async () => {
    const tarball = await readFile(tarballs[p]);
    const { messages, pkg } = await publint({
      pack: { tarball: new Uint8Array(tarball).buffer },
      level: "warning",
    });
    expect(pkg.name).toBe(`@locks/${p}`);
    expect(messages.map((m) => `${m.type}: ${formatMessage(m, pkg)}`)).toEqual([]);
  });

  // ESM-only packages: the node10 and node16-from-CJS resolutions describe a
  // `require()` that TypeScript types as an error; Node 20.19+ loads them
  // through require(esm), which the "require" test below checks for real.
  it("passes @arethetypeswrong/cli (esm-only profile) on every entry point in exports", async () => {
    const manifest = await packedManifest(p);
    const subpaths = Object.keys(exportTargets(manifest)).sort();
    // Exits non-zero on a problem the profile does not ignore.
    const { stdout } = await sh(
      bin("attw"),
      [tarballs[p], "--profile", "esm-only", "--format", "json"],
      work,
    );
    const { analysis } = JSON.parse(stdout) as { analysis: AttwAnalysis };
    const checked = Object.keys(analysis.entrypoints).filter((s) => s !== "./package.json");
    expect(checked.sort()).toEqual(subpaths);
    for (const subpath of subpaths) {
      for (const kind of ["node16-esm", "bundler"] as const) {
        const resolved = analysis.entrypoints[subpath]?.resolutions[kind];
        expect(resolved?.resolution?.fileName, `${subpath} (${kind}) types`).toMatch(/\.d\.ts$/);
        expect(resolved?.implementationResolution?.fileName, `${subpath} (${kind})`).toMatch(
          /\.js$/,
        );
      }
    }
    const esmProblems = analysis.problems.filter(
      (problem) => problem.resolutionKind === "node16-esm" || problem.resolutionKind === "bundler",
    );
    expect(esmProblems).toEqual([]);
  });
});

describe("installed from the tarballs with npm", () => {
  let app: string;
  beforeAll(async () => {
    app = await npmProject("all", published);
  });

  /** Writes a script into the app and runs it with node, returning stdout. */
  async function script(name: string, source: string, env: NodeJS.ProcessEnv = {}) {
    await writeFile(join(app, name), source);
    const { stdout } = await sh(process.execPath, [name], app, env);
    return stdout.trim();
  }

  const lockAndRelease = (imports: string, backend: string) => `${imports}
import { createLocks } from "@locks/core";
const locks = createLocks(${backend}, { namespace: "packaging-" + process.pid });
const lease = await locks.acquire("k", { timeoutMs: 10_000 });
const other = await locks.tryAcquire("k");
if (other !== null) throw new Error("second holder");
console.log(lease.key, typeof lease.fencingToken);
await lease.release();
await locks.close();
`;

  it("thread: takes and releases a lock", async () => {
    const out = await script(
      "thread.mjs",
      lockAndRelease(`import { threadBackend } from "@locks/thread";`, "threadBackend()"),
    );
    expect(out).toBe("k bigint");
  });

  it("file: takes and releases a lock", async () => {
    const dir = join(work, "file-locks");
    await mkdir(dir);
    const out = await script(
      "file.mjs",
      lockAndRelease(
        `import { fileBackend } from "@locks/file";`,
        "fileBackend({ directory: process.env.LOCK_DIR })",
      ),
      { LOCK_DIR: dir },
    );
    expect(out).toBe("k bigint");
  });

  it("redis: takes and releases a lock", async () => {
    const out = await script(
      "redis.mjs",
      lockAndRelease(
        `import { redisBackend } from "@locks/redis";`,
        "redisBackend({ url: process.env.REDIS_URL })",
      ),
      { REDIS_URL: inject("redisUrl") },
    );
    expect(out).toBe("k bigint");
  });

  it("etcd: takes and releases a lock", async () => {
    const out = await script(
      "etcd.mjs",
      lockAndRelease(
        `import { etcdBackend } from "@locks/etcd";`,
        `etcdBackend({ hosts: process.env.ETCD_ENDPOINTS.split(",") })`,
      ),
      { ETCD_ENDPOINTS: inject("etcdEndpoints").join(",") },
    );
    expect(out).toBe("k bigint");
  });

  it("postgres: takes and releases a lock", async () => {
    const out = await script(
      "postgres.mjs",
      lockAndRelease(
        `import { postgresBackend } from "@locks/postgres";`,
        "postgresBackend({ connectionString: process.env.DATABASE_URL })",
      ),
      { DATABASE_URL: inject("databaseUrl") },
    );
    expect(out).toBe("k bigint");
  });

  it("mysql: takes and releases a lock", async () => {
    const out = await script(
      "mysql.mjs",
      lockAndRelease(
        `import { mysqlBackend } from "@locks/mysql";`,
        "mysqlBackend({ uri: process.env.MYSQL_URL })",
      ),
      { MYSQL_URL: inject("mysqlUrl") },
    );
    expect(out).toBe("k bigint");
  });

  it("require() loads every package (require(esm), Node 20.19+)", async () => {
    const out = await script(
      "require.cjs",
      `const { createLocks } = require("@locks/core");
const { threadBackend } = require("@locks/thread");
for (const [name, fn] of [["@locks/file", "fileBackend"], ["@locks/redis", "redisBackend"],
  ["@locks/etcd", "etcdBackend"], ["@locks/postgres", "postgresBackend"],
  ["@locks/mysql", "mysqlBackend"]]) {
  if (typeof require(name)[fn] !== "function") throw new Error(name + " has no " + fn);
}
if (typeof require("@locks/cli") !== "object") throw new Error("@locks/cli");
(async () => {
  const locks = createLocks(threadBackend());
  const lease = await locks.acquire("k");
  console.log(lease.key);
  await lease.release();
  await locks.close();
})();
`,
    );
    expect(out).toBe("k");
  });

  it("@locks/core's entry points each resolve from ESM, split by reader", async () => {
    const out = await script(
      "entrypoints.mjs",
      `const names = async (path) => Object.keys(await import(path)).sort();
console.log(JSON.stringify({
  core: await names("@locks/core"),
  backend: await names("@locks/core/backend"),
  history: await names("@locks/core/history"),
  // Not imported: it imports vitest, an optional peer that this project lacks.
  conformance: import.meta.resolve("@locks/core/conformance"),
}));
`,
    );
    const { core, backend, history, conformance } = JSON.parse(out) as {
      core: string[];
      backend: string[];
      history: string[];
      conformance: string;
    };
    expect(core).toEqual(expect.arrayContaining(["createLocks", "isLockError", "MIN_TTL_MS"]));
    expect(backend).toEqual(
      expect.arrayContaining([
        "check",
        "createRequest",
        "defineOptions",
        "Liveness",
        "newOwnerToken",
        "raceAbort",
        "retryInBackground",
        "scopedKey",
        "sleep",
        "WakeRegistry",
      ]),
    );
    expect(history).toEqual(
      expect.arrayContaining(["assertHistory", "checkHistory", "History", "historyNow"]),
    );
    // The user API carries no backend author's or test's names, nor the ones that went away;
    // the error class and its guard are for both readers.
    const both = ["isLockError", "LockError"];
    const gone = ["holdEnd", "MAX_KEY_BYTES", "validateKey"];
    const leaked = core.filter(
      (name) => !both.includes(name) && [...backend, ...history, ...gone].includes(name),
    );
    expect(leaked).toEqual([]);
    expect(conformance).toMatch(/\/node_modules\/@locks\/core\/dist\/conformance\/index\.js$/);
  });

  it("@locks/core's entry points type-check from a NodeNext project", async () => {
    await writeFile(
      join(app, "types.ts"),
      `import { type Backend, createLocks, type Lease } from "@locks/core";
import { type BackendHost, check, defineOptions, type LockRequest, WakeRegistry } from "@locks/core/backend";
import { assertHistory, type HoldRecord } from "@locks/core/history";
import type { ConformanceOptions } from "@locks/core/conformance";
export const parse = defineOptions({ url: check.string });
export const wakes = new WakeRegistry();
export type Used = [Backend, Lease, BackendHost, LockRequest, HoldRecord, ConformanceOptions];
export const used = [createLocks, assertHistory];
`,
    );
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
    const flags = ["--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022"];
    // skipLibCheck: the packages' .d.ts name Node's types (Buffer), which this bare project lacks.
    await sh(
      process.execPath,
      [tsc, ...flags, "--strict", "--noEmit", "--skipLibCheck", "types.ts"],
      app,
    );
  });

  // The packages whose imports are all ours (the cli loads its backends when used): a client
  // library's own side effects (graceful-fs, under proper-lockfile, marks globalThis) are not ours
  // to check. @locks/thread is left out on purpose: it keeps one lock registry per process under
  // a Symbol.for key of globalThis, so that two installed copies of it still contend on one table.
  it("importing core and cli changes no global or built-in (sideEffects: false)", async () => {
    const out = await script(
      "globals.mjs",
      `const targets = { globalThis, Symbol, "Object.prototype": Object.prototype,
  "Array.prototype": Array.prototype, "Promise.prototype": Promise.prototype, AbortSignal, Error };
const snapshot = () => Object.entries(targets).map(([name, target]) => [name, Reflect.ownKeys(target).map(String)]);
const before = snapshot();
for (const name of ["@locks/core", "@locks/core/backend", "@locks/core/history", "@locks/cli"]) {
  await import(name);
}
const changes = snapshot().flatMap(([name, keys], i) => {
  const was = before[i][1];
  return [...keys.filter((k) => !was.includes(k)).map((k) => "+" + name + "." + k),
    ...was.filter((k) => !keys.includes(k)).map((k) => "-" + name + "." + k)];
});
console.log(JSON.stringify(changes));
`,
    );
    expect(JSON.parse(out)).toEqual([]);
  });

  it("the locks bin runs --version", async () => {
    const { version } = await packedManifest("cli");
    const { stdout } = await sh(join(app, "node_modules/.bin/locks"), ["--version"], app);
    expect(stdout).toContain(String(version));
  });
});

describe("@locks/mysql installed alone", () => {
  it("pulls mysql2 and no other driver", async () => {
    const app = await npmProject("mysql-only", ["core", "mysql"]);
    const has = (name: string) => existsSync(join(app, "node_modules", name));
    expect(has("mysql2")).toBe(true);
    for (const other of ["ioredis", "etcd3", "pg", "proper-lockfile", "@locks/postgres"]) {
      expect(has(other), other).toBe(false);
    }
    await writeFile(
      join(app, "import.mjs"),
      `import { mysqlBackend } from "@locks/mysql";\nconsole.log(typeof mysqlBackend);\n`,
    );
    const { stdout } = await sh(process.execPath, ["import.mjs"], app);
    expect(stdout.trim()).toBe("function");
  });
});

describe("@locks/redis installed alone", () => {
  it("does not pull etcd3 or pg", async () => {
    const app = await npmProject("redis-only", ["core", "redis"]);
    const has = (name: string) => existsSync(join(app, "node_modules", name));
    expect(has("ioredis")).toBe(true);
    expect(has("etcd3")).toBe(false);
    expect(has("pg")).toBe(false);
    expect(has("proper-lockfile")).toBe(false);
    expect(has("@locks/etcd")).toBe(false);
    expect(has("@locks/postgres")).toBe(false);
    expect(has("mysql2")).toBe(false);
    await writeFile(
      join(app, "import.mjs"),
      `import { redisBackend } from "@locks/redis";\nconsole.log(typeof redisBackend);\n`,
    );
    const { stdout } = await sh(process.execPath, ["import.mjs"], app);
    expect(stdout.trim()).toBe("function");
  });
});

/**
 * The docs' Installing page gives users commands; these tests run them as written, so the page
 * cannot drift from what works: `pnpm pack:all` (beforeAll above), its npm and pnpm install
 * lines from a project next to a clone, its ESM and CommonJS checks, its table of what each
 * package brings along, and its claim about installing a source directory.
 */
describe("the Installing page (docs/guide/installing.md), as written", () => {
  const page = join(root, "docs", "guide", "installing.md");
  let markdown: string;
  /** The page's ```sh fences, each as a whole (a command may go on over a `\` line end). */
  let blocks: string[];
  /** Their lines. */
  let commands: string[];
  /** The page's ```js fences whose first line names the file: "// check.mjs". */
  let files: Array<{ name: string; source: string }>;

  beforeAll(async () => {
    markdown = await readFile(page, "utf8");
    blocks = [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
    commands = blocks.flatMap((block) => block.split("\n").filter(Boolean));
    files = [...markdown.matchAll(/```js\n\/\/ (\S+)\n([\s\S]*?)```/g)].map((m) => ({
      name: m[1]!,
      source: m[2]!,
    }));
    // The page's projects sit next to a clone: ../locks/tarballs is what `pnpm pack:all` wrote.
    await mkdir(join(work, "locks"));
    await symlink(join(work, "packs"), join(work, "locks", "tarballs"));
  });

  it("tells users to run the pack command this test runs, and the Node the packages need", async () => {
    expect(commands).toContain("pnpm pack:all");
    const { engines } = await packedManifest("core");
    const node = (engines as { node: string }).node.replace(/^>=/, "");
    expect(markdown).toContain(`Node.js ${node} or later`);
  });

  it.each(["npm install", "pnpm add"])(
    "its `%s` command installs the tarballs; both checks print token 1",
    async (tool) => {
      const block = blocks.find((text) => text.startsWith(`${tool} ../locks/tarballs/`));
      expect(block, `a "${tool} ../locks/tarballs/…" block`).toBeDefined();
      const app = join(work, `page-${tool.split(" ")[0]}`);
      await mkdir(app);
      await writeFile(
        join(app, "package.json"),
        JSON.stringify({ name: "page-app", private: true }),
      );
      // Through a shell, as a user types it: the shell expands the version's `*`.
      await sh("sh", ["-c", block!], app, {
        npm_config_audit: "false",
        npm_config_fund: "false",
        npm_config_prefer_offline: "true",
        npm_config_loglevel: "error",
      });
      expect(files.map((f) => f.name).sort()).toEqual(["check.cjs", "check.mjs"]);
      for (const { name, source } of files) {
        await writeFile(join(app, name), source);
        const { stdout } = await sh(process.execPath, [name], app);
        expect(stdout.trim(), name).toBe("token 1");
      }
    },
  );

  it("its table of what each package installs matches the packed manifests", async () => {
    const rows = new Map<string, string>();
    for (const m of markdown.matchAll(/^\| `@locks\/([a-z]+)` \|[^|]*\| (.*) \|$/gm)) {
      rows.set(m[1]!, m[2]!);
    }
    expect([...rows.keys()].sort()).toEqual([...published].sort());
    for (const p of published) {
      const { dependencies } = await packedManifest(p);
      const names = Object.keys((dependencies as Record<string, string>) ?? {}).sort();
      const listed = [...rows.get(p)!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).sort();
      expect(listed, p).toEqual(names);
    }
  });

  it("is right that npm cannot install a package's source directory as a copy (workspace: ranges)", async () => {
    expect(markdown).toContain('Unsupported URL Type "workspace:"');
    const app = join(work, "page-source-dir");
    await mkdir(app);
    await writeFile(
      join(app, "package.json"),
      JSON.stringify({ name: "source-dir", private: true }),
    );
    const install = sh(
      "npm",
      ["install", "--install-links", join(root, "packages", "redis"), "--no-audit", "--no-fund"],
      app,
    );
    await expect(install).rejects.toThrow(
      /EUNSUPPORTEDPROTOCOL[\s\S]*Unsupported URL Type "workspace:"/,
    );
  });
});
