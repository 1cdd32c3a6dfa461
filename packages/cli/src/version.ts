import { readFileSync } from "node:fs";

/** The version of @locks/cli, from its package.json (`src/` and `dist/` sit next to it). */
export function cliVersion(): string {
  const manifest = JSON.parse(
    readFileSync(new URL("../package.json", import.meta.url), "utf8"),
  ) as {
    version?: unknown;
  };
  return typeof manifest.version === "string" ? manifest.version : "unknown";
}
