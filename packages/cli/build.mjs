/**
 * Builds dist/: the `locks` executable (cli.js) and the programmatic entry
 * (index.js) bundled by esbuild, with tsc writing only the .d.ts.
 *
 * Why a bundle: start-up is what a user of `locks run -- cmd` pays on every
 * call, and Node's ESM loader spends most of it resolving, reading and
 * compiling one file at a time (tsc's output, @locks/core's and the
 * backend's: ~60 modules for a file lock). The CLI, @locks/core and the
 * backend packages' own code are bundled; each backend is its own chunk,
 * loaded by the dynamic import() of the scheme that names it, so `locks run`
 * on files reads no Redis, etcd, PostgreSQL or MySQL code. The store drivers
 * (ioredis, etcd3, pg, mysql2, proper-lockfile, ...) stay external: they are
 * this package's dependencies, resolved at run time, updated by the user's
 * package manager. Node built-ins are external too (platform "node").
 */
import { chmodSync, readFileSync, rmSync } from "node:fs";
import { build } from "esbuild";

const manifest = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"));

rmSync(new URL("./dist", import.meta.url), { recursive: true, force: true });
await build({
  entryPoints: { cli: "src/cli.ts", index: "src/index.ts" },
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  // Bundle @locks/* from their TypeScript sources, as the tests run them (the
  // "@locks/source" condition of their exports), not from a dist/ that may be stale.
  conditions: ["@locks/source"],
  // Every dependency but @locks/* (bundled) is resolved at run time.
  external: Object.keys(manifest.dependencies).filter((name) => !name.startsWith("@locks/")),
  // Chunks sit next to cli.js: version.ts reads "../package.json" from its own file.
  chunkNames: "chunk-[hash]",
  sourcemap: true,
  logLevel: "warning",
});
chmodSync(new URL("./dist/cli.js", import.meta.url), 0o755);
