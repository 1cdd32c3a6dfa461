import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type DefaultTheme, defineConfig } from "vitepress";

const docsRoot = fileURLToPath(new URL("..", import.meta.url));

/**
 * The API reference's sidebar, read from what TypeDoc generated into api/
 * (one page per module). Without it (generation not run) the sidebar is empty.
 */
function apiSidebar(): DefaultTheme.SidebarItem[] {
  const apiDir = join(docsRoot, "api");
  if (!existsSync(apiDir)) return [];
  const pages: string[] = [];
  const walk = (dir: string, prefix: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(join(dir, entry.name), `${prefix}${entry.name}/`);
      else if (entry.name.endsWith(".md") && entry.name !== "index.md") {
        pages.push(`${prefix}${entry.name.slice(0, -3)}`);
      }
    }
  };
  walk(apiDir, "");
  return pages.sort().map((page) => {
    const heading = /^# (.+)$/m.exec(readFileSync(join(apiDir, `${page}.md`), "utf8"));
    return { text: heading?.[1] ?? page, link: `/api/${page}` };
  });
}

const backends: { text: string; link: string }[] = [
  { text: "thread", link: "/backends/thread" },
  { text: "file", link: "/backends/file" },
  { text: "redis", link: "/backends/redis" },
  { text: "etcd", link: "/backends/etcd" },
  { text: "postgres", link: "/backends/postgres" },
  { text: "mysql", link: "/backends/mysql" },
];

export default defineConfig({
  title: "locks",
  description:
    "One lock API for Node.js over the resource your contenders share: memory, files, Redis, etcd, PostgreSQL, MySQL.",
  lang: "en-US",
  head: [["link", { rel: "icon", type: "image/svg+xml", href: "/favicon.svg" }]],
  srcExclude: ["README.md", "test/**", "scripts/**", "examples/**", "node_modules/**"],
  // Dead links fail the build (VitePress's default): keep it that way.
  markdown: { theme: { light: "github-light", dark: "github-dark" } },
  themeConfig: {
    logo: "/favicon.svg",
    search: { provider: "local" },
    nav: [
      { text: "Guide", link: "/guide/getting-started" },
      { text: "Concepts", link: "/concepts/leases" },
      { text: "Backends", items: backends },
      { text: "API", link: "/api/" },
      { text: "Benchmarks", link: "/guide/benchmarks" },
    ],
    sidebar: [
      {
        text: "Guide",
        items: [
          { text: "Getting started", link: "/guide/getting-started" },
          { text: "Choosing a backend", link: "/guide/choosing-a-backend" },
          { text: "The locks CLI", link: "/guide/cli" },
          { text: "Writing a backend", link: "/guide/writing-a-backend" },
          { text: "Benchmarks", link: "/guide/benchmarks" },
          { text: "Waiting at scale", link: "/guide/scale" },
          { text: "Reliability under faults", link: "/guide/reliability" },
          { text: "Observability", link: "/guide/observability" },
          { text: "Leader election", link: "/guide/leader-election" },
          { text: "The Web Locks API", link: "/guide/web-locks" },
        ],
      },
      {
        text: "Concepts",
        items: [
          { text: "Leases, TTL and the watchdog", link: "/concepts/leases" },
          { text: "Fencing tokens", link: "/concepts/fencing" },
          { text: "Scopes, cancellation, close", link: "/concepts/lifecycle" },
          { text: "Who holds it, several keys, minimum holds", link: "/concepts/coordination" },
          { text: "Errors and codes", link: "/concepts/errors" },
        ],
      },
      { text: "Backends", items: backends },
      { text: "API reference", link: "/api/", collapsed: true, items: apiSidebar() },
    ],
    outline: { level: [2, 3] },
    footer: { message: "MIT licensed. Every code sample on this site is type-checked in CI." },
  },
});
