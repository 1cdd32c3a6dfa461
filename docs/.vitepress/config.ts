import { defineConfig } from "vitepress";
import { apiSidebar } from "./api-sidebar.js";

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
      { text: "Recipes", link: "/recipes/" },
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
          { text: "Installing", link: "/guide/installing" },
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
        text: "Recipes",
        link: "/recipes/",
        items: [
          { text: "Leader election with fenced writes", link: "/recipes/leader-election" },
          { text: "A job once per interval", link: "/recipes/once-per-interval" },
          { text: "Several keys in one transfer", link: "/recipes/several-keys" },
          { text: "Fenced writes to PostgreSQL and Redis", link: "/recipes/fenced-writes" },
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
