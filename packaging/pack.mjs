#!/usr/bin/env node
/**
 * Packs every published package of the repository (each packages/* whose
 * package.json is not private) into one directory, as npm would get them:
 * `pnpm pack` rewrites the "workspace:" ranges into versions.
 *
 *   pnpm build && pnpm pack:all [directory]     (default: ./tarballs)
 *
 * Prints the tarballs' paths, one a line. The docs' Installing page tells
 * users to run this, and the packaging test runs it, so the two cannot drift.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
// pnpm runs a package script in the root; INIT_CWD is where the user typed the command.
const destination = resolve(process.env.INIT_CWD ?? process.cwd(), process.argv[2] ?? "tarballs");

const published = readdirSync(join(root, "packages"), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => join(root, "packages", entry.name))
  .filter((dir) => {
    const manifest = join(dir, "package.json");
    return existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).private !== true;
  })
  .sort();

const unbuilt = published.filter((dir) => !existsSync(join(dir, "dist", "index.js")));
if (unbuilt.length > 0) {
  console.error(`not built: ${unbuilt.join(", ")}. Run \`pnpm build\` first.`);
  process.exit(1);
}

mkdirSync(destination, { recursive: true });
// The directory ignores itself, so packing inside a clone leaves `git status` clean.
writeFileSync(join(destination, ".gitignore"), "*\n");
for (const dir of published) {
  const out = execFileSync("pnpm", ["pack", "--pack-destination", destination, "--json"], {
    cwd: dir,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  const { filename } = JSON.parse(out);
  console.log(isAbsolute(filename) ? filename : join(destination, filename));
}
