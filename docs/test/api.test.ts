import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { apiSidebar } from "../.vitepress/api-sidebar.js";
import { collectSamples } from "../scripts/samples.js";

/*
 * The API reference as built (pnpm --filter @locks/docs build), read from
 * the HTML in .vitepress/dist: the hand-written landing page leads with what
 * users call, every link on it lands on an existing page AND on the member
 * it names (VitePress fails the build on a dead page, never on a dead
 * anchor), and the generated pages and the sidebar keep the same order.
 */

const dist = fileURLToPath(new URL("../.vitepress/dist", import.meta.url));

/** A heading of a built page: level, id and text as a reader sees it. */
interface Heading {
  readonly level: number;
  readonly id: string;
  readonly text: string;
}

/** A link of a built page's content. */
interface Link {
  readonly href: string;
  readonly title: string | undefined;
  readonly text: string;
}

const pages = new Map<string, string>();

/** The built HTML of a site path ("/api/core"), read once. */
function page(path: string): string {
  let html = pages.get(path);
  if (html === undefined) {
    const file = path.endsWith("/") ? join(dist, path, "index.html") : join(dist, `${path}.html`);
    if (!existsSync(file)) throw new Error(`${path}: no built page ${file}`);
    html = readFileSync(file, "utf8");
    pages.set(path, html);
  }
  return html;
}

/** The page's content column (VitePress's .vp-doc), without navigation, sidebar and outline. */
function content(html: string): string {
  const start = html.indexOf('class="vp-doc');
  const end = html.indexOf('class="VPDocFooter', start);
  if (start === -1 || end === -1) throw new Error("no .vp-doc content in the page");
  return html.slice(start, end);
}

/** Text as rendered: tags dropped, entities and VitePress's zero-width anchors resolved. */
function text(html: string): string {
  return html
    .replace(/<a class="header-anchor"[^>]*>.*?<\/a>/g, "")
    .replace(/<[^>]+>/g, "")
    .replace(/\u200b/g, "")
    .replace(/&lt;/g, "<")
    .replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, "&")
    .trim();
}

function headings(html: string): Heading[] {
  return [...content(html).matchAll(/<h([1-6]) id="([^"]+)"[^>]*>(.*?)<\/h\1>/gs)].map((m) => ({
    level: Number(m[1]),
    id: m[2] ?? "",
    text: text(m[3] ?? ""),
  }));
}

function links(html: string): Link[] {
  return [...content(html).matchAll(/<a ([^>]*)>(.*?)<\/a>/gs)]
    .map((m) => {
      const attributes = m[1] ?? "";
      return {
        href: /href="([^"]*)"/.exec(attributes)?.[1] ?? "",
        title: /title="([^"]*)"/.exec(attributes)?.[1],
        text: text(m[2] ?? ""),
      };
    })
    .filter((link) => !link.href.startsWith("#") || link.text !== "");
}

/** Every element id of a page (headings and the reference's property anchors). */
function ids(html: string): Set<string> {
  return new Set([...html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1] ?? ""));
}

/** "/api/core.html#acquire" seen from `from` -> site path "/api/core" and fragment "acquire". */
function resolveLink(href: string, from: string): { path: string; fragment: string } {
  const url = new URL(href, `http://site${from}`);
  const path = url.pathname.replace(/\.html$/, "").replace(/\/index$/, "/");
  return { path, fragment: decodeURIComponent(url.hash.slice(1)) };
}

/** A member's name as its heading shows it: "acquire()" -> "acquire", "MIN_TTL_MS" stays. */
function memberName(heading: string): string {
  return heading.replace(/\(\)\??$/, "").replace(/\?$/, "");
}

beforeAll(() => {
  if (!existsSync(join(dist, "api", "index.html"))) {
    throw new Error(`no built site in ${dist}: run \`pnpm --filter @locks/docs build\` first`);
  }
});

describe("the API landing page", () => {
  it("starts with createLocks, Locks, Lease and the errors, in that order", () => {
    const sections = headings(page("/api/"))
      .filter((h) => h.level === 2)
      .map((h) => h.text);
    expect(sections.slice(0, 4)).toEqual(["createLocks", "Locks", "Lease", "Errors"]);
    // Then options and coordination; authors' and tests' tools come after the backends.
    expect(sections.indexOf("Options")).toBe(4);
    expect(sections.indexOf("Coordination")).toBe(5);
    expect(sections.indexOf("Writing a backend")).toBeGreaterThan(sections.indexOf("Backends"));
    expect(sections.indexOf("Testing")).toBeGreaterThan(sections.indexOf("Writing a backend"));
  });

  it("has its code checked and run like every other page's (the rest of api/ is generated)", () => {
    const landing = collectSamples().filter((sample) => sample.page === "api/index.md");
    expect(landing.length).toBeGreaterThan(0);
    expect(
      landing.every((sample) => sample.check && sample.run && sample.output !== undefined),
    ).toBe(true);
  });

  it("links every member to its own entry: the page exists, the anchor exists and is that member", () => {
    const from = "/api/";
    const found = links(page(from)).filter((link) => !/^[a-z]+:/.test(link.href));
    expect(found.length).toBeGreaterThan(40);
    const problems: string[] = [];
    for (const link of found) {
      const { path, fragment } = resolveLink(link.href, from);
      let html: string;
      try {
        html = page(path);
      } catch (error) {
        problems.push(`${link.text} -> ${link.href}: ${(error as Error).message}`);
        continue;
      }
      if (fragment === "") continue;
      if (!ids(html).has(fragment)) {
        problems.push(`${link.text} -> ${link.href}: no id "${fragment}" on ${path}`);
        continue;
      }
      if (!path.startsWith("/api/") || path === "/api/") continue;
      // A link into the reference names its member in its title ("Locks.acquire"),
      // and lands on that member's heading under that owner's heading.
      if (link.title === undefined) {
        problems.push(`${link.text} -> ${link.href}: no title naming the member it links to`);
        continue;
      }
      const all = headings(html);
      const at = all.findIndex((h) => h.id === fragment);
      const target = all[at];
      const [owner, member] = link.title.includes(".")
        ? (link.title.split(".") as [string, string])
        : [undefined, link.title];
      if (target === undefined || memberName(target.text) !== member) {
        problems.push(
          `${link.text} -> ${link.href}: lands on "${target?.text ?? "no heading"}", not ${member}`,
        );
        continue;
      }
      if (owner !== undefined) {
        const section = all.slice(0, at).findLast((h) => h.level === 3);
        if (section?.text !== owner) {
          problems.push(
            `${link.text} -> ${link.href}: lands on ${member} of ${section?.text ?? "nothing"}, not of ${owner}`,
          );
        }
      }
    }
    expect(problems).toEqual([]);
  });
});

describe("the generated reference", () => {
  it("opens @locks/core with createLocks, Locks and Lease, and leaves the backend contract for last", () => {
    const all = headings(page("/api/core"));
    const members = all.filter((h) => h.level === 3).map((h) => memberName(h.text));
    expect(members.slice(0, 3)).toEqual(["createLocks", "Locks", "Lease"]);
    const groups = all.filter((h) => h.level === 2).map((h) => h.text);
    expect(groups.slice(0, 4)).toEqual(["Client", "Leases", "Errors", "Options"]);
    expect(groups.at(-1)).toBe("Backend contract");
    // Members of Locks in the order they are declared: acquire first, close last.
    const locks = all.findIndex((h) => h.level === 3 && h.text === "Locks");
    const next = all.findIndex((h, i) => i > locks && h.level <= 3);
    const methods = all.slice(locks, next).filter((h) => h.level === 5);
    expect(methods[0]?.text).toBe("acquire()");
    expect(methods.at(-1)?.text).toBe("close()");
  });

  it("opens each backend's page with its factory", () => {
    for (const name of ["thread", "file", "redis", "etcd", "postgres", "mysql"]) {
      const first = headings(page(`/api/${name}`)).find((h) => h.level === 3);
      expect(first?.text, `/api/${name}`).toBe(`${name}Backend()`);
    }
  });

  /** The reference's pages in the landing page's order: core, the backends, authors' and tests' tools, the CLI. */
  const pageOrder = [
    "/api/core",
    "/api/thread",
    "/api/file",
    "/api/redis",
    "/api/etcd",
    "/api/postgres",
    "/api/mysql",
    "/api/core/backend",
    "/api/core/conformance",
    "/api/core/history",
    "/api/cli",
  ];

  it("has a sidebar entry for every generated page, in the landing page's order", () => {
    expect(apiSidebar().map((item) => item.link)).toEqual(pageOrder);
  });

  it("shows that sidebar on the built pages", () => {
    const html = page("/api/core");
    const start = html.indexOf('id="VPSidebarNav"');
    expect(start, "no sidebar").toBeGreaterThan(-1);
    const sidebar = html.slice(start, html.indexOf("</nav>", start));
    const order = [...sidebar.matchAll(/href="(\/api\/[^"#]+)"/g)].map(
      (m) => resolveLink(m[1] ?? "", "/").path,
    );
    expect(order).toEqual(pageOrder);
  });
});
