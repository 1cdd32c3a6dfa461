import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DefaultTheme } from "vitepress";

const apiDir = fileURLToPath(new URL("../api", import.meta.url));

/**
 * The order of the reference's pages, as a reader needs them: the API users
 * call, then the backends (from the one in the process out to the servers),
 * then what backend authors and tests import, then the CLI. The same order
 * as the landing page, api/index.md.
 */
const pageOrder = [
  "core",
  "thread",
  "file",
  "redis",
  "etcd",
  "postgres",
  "mysql",
  "core/backend",
  "core/conformance",
  "core/history",
  "cli",
];

/** Every page TypeDoc generated under api/ ("core", "core/backend", ...), the landing page aside. */
function generatedPages(): string[] {
  const pages: string[] = [];
  const walk = (dir: string, prefix: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(dir, entry.name), `${prefix}${entry.name}/`);
      else if (entry.name.endsWith(".md") && `${prefix}${entry.name}` !== "index.md") {
        pages.push(`${prefix}${entry.name.slice(0, -3)}`);
      }
    }
  };
  walk(apiDir, "");
  return pages;
}

/**
 * The API reference's sidebar: one entry per generated page (titled with the
 * page's heading, the package's import path), in `pageOrder`; a page not
 * listed there (a new entry point) follows, alphabetically, so it is never
 * missing. Empty before the reference is generated.
 */
export function apiSidebar(): DefaultTheme.SidebarItem[] {
  if (!existsSync(apiDir)) return [];
  const rank = (page: string) => {
    const at = pageOrder.indexOf(page);
    return at === -1 ? pageOrder.length : at;
  };
  const pages = generatedPages().sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  return pages.map((page) => {
    const heading = /^# (.+)$/m.exec(readFileSync(join(apiDir, `${page}.md`), "utf8"));
    return { text: heading?.[1] ?? page, link: `/api/${page}` };
  });
}
