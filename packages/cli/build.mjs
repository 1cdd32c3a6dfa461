/**
 * Builds dist/ with esbuild (tsc writes only the .d.ts).
 *
 * Why bundles: start-up is what a user of `locks run -- cmd` pays on every
 * call. From tsc's output, Node resolved, read and compiled ~60 ES modules
 * one at a time for a file lock (the CLI's, @locks/core's and the backend's),
 * and an ES module entry alone starts Node's ESM loader (~25 ms). So the bin
 * is CommonJS, in a few files, each loaded only when needed:
 *
 * - cli.cjs: the bin (src/cli.ts): turns on the code cache of the other
 *   bundles (src/compile-cache.ts), then loads lib.cjs.
 * - lib.cjs: the CLI's own modules (src/index.ts, which exports `main`).
 * - core.cjs: @locks/core and @locks/core/backend, one copy for the CLI and
 *   the backend it loads.
 * - file.cjs, redis.cjs, etcd.cjs, postgres.cjs, mysql.cjs: each backend
 *   package's own code, required when its scheme is used, so `locks run` on
 *   files reads no Redis, etcd, PostgreSQL or MySQL code.
 * - index.js: the ES module entry of the package, re-exporting lib.cjs.
 *
 * The store drivers etcd3, pg and mysql2 are not bundled: each is required,
 * at run time, from the installed backend package that declares it
 * (createRequire on its package.json). proper-lockfile and ioredis are
 * bundled into file.cjs and redis.cjs (see BUNDLED_DRIVERS): the versions
 * installed when the CLI is built, within the backends' ranges. Node
 * built-ins are external (platform "node").
 */
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const BACKENDS = ["file", "redis", "etcd", "postgres", "mysql"];
/**
 * Drivers bundled into their backend's file, with their dependencies:
 * resolving and compiling their modules one by one from node_modules was a
 * tenth of a file lock's start-up (proper-lockfile with retry and
 * signal-exit) and a third of a Redis lock's (ioredis and its nine packages).
 * Both are plain JavaScript that reads no files of its own. etcd3 (gRPC
 * with .proto files read at run time), pg and mysql2 stay in node_modules.
 */
const BUNDLED_DRIVERS = new Set(["proper-lockfile", "ioredis"]);
const VERSION = JSON.parse(readFileSync(new URL("package.json", import.meta.url), "utf8")).version;
/** `node build.mjs [outdir]`: test/bundle.test.ts builds into a directory of its own. */
const outdir = resolve(process.argv[2] ?? "dist");
/** Entry points and the stdin entries' resolveDir are relative to the package. */
const packageDir = fileURLToPath(new URL(".", import.meta.url));

/**
 * Imports between the bundles become require() of their files: @locks/core
 * (and /backend) one of core.cjs's two namespaces, @locks/<backend> its
 * file, and (from the bin) ./main.js the CLI's lib.cjs.
 */
const linkBundles = (self) => ({
  name: "link-bundles",
  setup(build) {
    build.onResolve({ filter: /^@locks\/core(\/backend)?$/ }, (args) =>
      self === "core" ? undefined : { path: args.path, namespace: "core-part" },
    );
    build.onLoad({ filter: /.*/, namespace: "core-part" }, (args) => ({
      contents: `module.exports = require("./core.cjs").${args.path.endsWith("/backend") ? "backend" : "api"};`,
      loader: "js",
    }));
    build.onResolve({ filter: /^\.\/[a-z]+\.cjs$|^@locks\/[a-z]+\/package\.json$/ }, (args) => ({
      path: args.path,
      external: true,
    }));
    build.onResolve({ filter: /^@locks\/[a-z]+$/ }, (args) => {
      const name = args.path.slice("@locks/".length);
      return BACKENDS.includes(name) && name !== self
        ? { path: `./${name}.cjs`, external: true }
        : undefined;
    });
    if (self === "file") {
      // proper-lockfile is given its fs (see holding.ts): graceful-fs, its default, would only
      // patch node:fs on load. signal-exit checks one argument with node:assert (a few ms to load).
      build.onResolve({ filter: /^graceful-fs$/ }, () => ({ path: "node:fs", external: true }));
      build.onResolve({ filter: /^assert$/ }, () => ({
        path: "assert",
        namespace: "assert-equal",
      }));
      build.onLoad({ filter: /.*/, namespace: "assert-equal" }, () => ({
        contents:
          "exports.equal = (actual, expected, message) => { if (actual != expected) throw new Error(message); };",
        loader: "js",
      }));
    }
    // The version is the package's, read here: the bin reads no package.json at start-up.
    build.onLoad({ filter: /\/src\/version\.ts$/ }, () => ({
      contents: `export function cliVersion() { return ${JSON.stringify(VERSION)}; }`,
      loader: "js",
    }));
    // In a backend's bundle, any other bare import is one of its drivers.
    if (BACKENDS.includes(self)) {
      build.onResolve({ filter: /^[^./]/ }, (args) =>
        args.path.startsWith("node:") ||
        args.path.startsWith("@locks/") ||
        BUNDLED_DRIVERS.has(args.path) ||
        args.importer.includes("/node_modules/")
          ? undefined
          : { path: args.path, namespace: "driver" },
      );
      build.onLoad({ filter: /.*/, namespace: "driver" }, (args) => ({
        contents: `module.exports = require("node:module").createRequire(require.resolve(${JSON.stringify(`@locks/${self}/package.json`)}))(${JSON.stringify(args.path)});`,
        loader: "js",
      }));
    }
    if (self === "cli") {
      build.onResolve({ filter: /^\.\/main\.js$/ }, () => ({ path: "./lib.cjs", external: true }));
    }
  },
});

const bundle = (name, entry) =>
  build({
    ...entry,
    absWorkingDir: packageDir,
    outfile: `${outdir}/${name}.cjs`,
    bundle: true,
    format: "cjs",
    platform: "node",
    target: "node20",
    // A dynamic import() would start the ESM loader: require() the bundle instead.
    supported: { "dynamic-import": false },
    // Bundle @locks/* from their TypeScript sources, as the tests run them (the
    // "@locks/source" condition of their exports), not from a dist/ that may be stale.
    conditions: ["@locks/source"],
    // cli.ts names its own directory (see compile-cache.ts).
    define: { "import.meta.dirname": "__dirname" },
    plugins: [linkBundles(name)],
    sourcemap: true,
    logLevel: "warning",
  });

// A clean directory: the package's build script runs tsc for the .d.ts after this.
rmSync(outdir, { recursive: true, force: true });
await Promise.all([
  bundle("cli", { entryPoints: ["src/cli.ts"] }),
  bundle("lib", { entryPoints: ["src/index.ts"] }),
  bundle("core", {
    stdin: {
      contents:
        'export * as api from "@locks/core"; export * as backend from "@locks/core/backend";',
      resolveDir: packageDir,
      sourcefile: "core-entry.js",
    },
  }),
  ...BACKENDS.map((name) =>
    bundle(name, {
      stdin: {
        contents: `export * from "@locks/${name}";`,
        resolveDir: packageDir,
        sourcefile: `${name}.js`,
      },
    }),
  ),
]);
// Named exports of a CommonJS module, as Node's ESM import finds them (esbuild marks them).
writeFileSync(`${outdir}/index.js`, 'export * from "./lib.cjs";\n');
chmodSync(`${outdir}/cli.cjs`, 0o755);
