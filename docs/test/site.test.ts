import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StaticServer, serveStatic } from "./static-server.js";

/*
 * The built site (pnpm --filter @locks/docs build), served as a static host
 * would serve it and driven in Debian's headless Chromium: a reader opens the
 * home page, searches, follows a link to a backend page, and nothing on the
 * way logs an error to the console. The generated parts are read as a reader
 * reads them: each benchmark chart against the table above it, the support
 * table against the manifests. Screenshots of the pages worth looking at are
 * kept in .vitepress/cache/screenshots for review.
 */

const dist = fileURLToPath(new URL("../.vitepress/dist", import.meta.url));
const shots = fileURLToPath(new URL("../.vitepress/cache/screenshots", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let server: StaticServer;
let browser: BrowserContext;
let profile: string;

beforeAll(async () => {
  if (!existsSync(join(dist, "index.html"))) {
    throw new Error(`no built site in ${dist}: run \`pnpm --filter @locks/docs build\` first`);
  }
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} is missing: run docs/scripts/ensure-chromium.sh (apt-get install chromium)`,
    );
  }
  server = await serveStatic(dist);
  profile = mkdtempSync(join(tmpdir(), "locks-docs-chromium-"));
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  // A new, empty profile for every run (Playwright passes it as --user-data-dir).
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** A fresh page that records every console error, page error and failed request. */
async function openPage(): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    // Prefetches cancelled by a navigation are not failures.
    if (request.failure()?.errorText !== "net::ERR_ABORTED") {
      errors.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    }
  });
  page.on("response", (response) => {
    if (response.status() >= 400) errors.push(`HTTP ${response.status()}: ${response.url()}`);
  });
  return { page, errors };
}

function isPng(path: string): boolean {
  const bytes = readFileSync(path);
  return (
    bytes.length > 1000 &&
    bytes.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))
  );
}

describe("the built docs site in headless Chromium", { timeout: 60_000 }, () => {
  it("home page -> search -> backend page, with no console error", async () => {
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/`, { waitUntil: "networkidle" });
      expect(await page.locator(".VPHero .name").textContent()).toContain("locks");

      // The local search box: open it, type, and get results from the built index.
      await page.locator(".VPNavBarSearch button").click();
      const input = page.locator(".VPLocalSearchBox input");
      await input.waitFor({ state: "visible" });
      await input.fill("advisory");
      const results = page.locator(".VPLocalSearchBox .results a");
      await results.first().waitFor({ state: "visible", timeout: 10_000 });
      const hrefs = await results.evaluateAll((links) =>
        links.map((a) => a.getAttribute("href") ?? ""),
      );
      expect(hrefs.some((href) => href.includes("/backends/postgres"))).toBe(true);
      await page.keyboard.press("Escape");
      await page.locator(".VPLocalSearchBox").waitFor({ state: "detached" });

      // Follow a link from the home page to a backend page (client-side navigation).
      await page.locator('.VPContent a[href*="/backends/redis"]:visible').first().click();
      await page.waitForURL(/\/backends\/redis(\.html)?$/);
      await page.locator(".vp-doc h1", { hasText: /^redis/ }).waitFor();

      const shot = join(shots, "backend-page.png");
      await page.screenshot({ path: shot, fullPage: false });
      expect(isPng(shot)).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("a search result opens its page", async () => {
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/guide/getting-started`, { waitUntil: "networkidle" });
      await page.keyboard.press("Control+k"); // VitePress listens for the key "k" with Ctrl or Cmd
      const input = page.locator(".VPLocalSearchBox input");
      await input.waitFor({ state: "visible" });
      await input.fill("etcd revision");
      const first = page.locator(".VPLocalSearchBox .results a").first();
      await first.waitFor({ state: "visible", timeout: 10_000 });
      await page.keyboard.press("Enter");
      await page.waitForURL(/\/backends\/etcd/);
      await page.locator(".vp-doc h1", { hasText: /^etcd/ }).waitFor();
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  // One pass over the site: loading every page takes most of the time.
  it("every page in the sidebar loads without a console error, no table or figure wider than the column at 1280 px", async () => {
    const { page, errors } = await openPage();
    try {
      const links = await siteLinks(page);
      expect(links.length).toBeGreaterThan(10);
      const problems: string[] = [];
      let tables = 0;
      for (const link of links) {
        const response = await page.goto(link, { waitUntil: "load" });
        expect(response?.status(), link).toBe(200);
        await page.locator(".vp-doc h1").first().waitFor();
        const seen = await page.evaluate(layoutProblems);
        tables += seen.tables;
        problems.push(...seen.problems.map((p) => `${new URL(link).pathname}: ${p}`));
      }
      expect(tables, "tables looked at").toBeGreaterThan(20);
      expect(problems).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("every chart and timeline draws at a non-zero size, at 1280 px and on a phone", async () => {
    const pages = {
      "/guide/reliability": "svg.timeline",
      "/guide/benchmarks": "svg[class^='bench-']",
    };
    for (const width of [1280, 390]) {
      const { page, errors } = await openPage();
      try {
        await page.setViewportSize({ width, height: 900 });
        for (const [path, selector] of Object.entries(pages)) {
          await page.goto(`${server.url}${path}`, { waitUntil: "networkidle" });
          const sizes = await page
            .locator(`.vp-doc ${selector}`)
            .evaluateAll((svgs) => svgs.map((svg) => svg.getBoundingClientRect().toJSON()));
          expect(sizes.length, `${path}: ${selector}`).toBeGreaterThan(3);
          for (const size of sizes) {
            expect(size.width, `${path} at ${width} px`).toBeGreaterThan(100);
            expect(size.height, `${path} at ${width} px`).toBeGreaterThan(40);
          }
          // The page never scrolls sideways: a wide figure scrolls inside its own box.
          const pageWidth = await page.evaluate(() => document.documentElement.scrollWidth);
          expect(pageWidth, `${path} at ${width} px`).toBeLessThanOrEqual(width);
          const shot = join(shots, `${path.split("/").at(-1)}-${width}.png`);
          await page.screenshot({ path: shot, fullPage: true });
          expect(isPng(shot)).toBe(true);
        }
        expect(errors).toEqual([]);
      } finally {
        await page.close();
      }
    }
    console.log(`docs: screenshots for review in ${shots}`);
  });

  it("every benchmark chart plots the columns its caption names, bars labelled by library", async () => {
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/guide/benchmarks`, { waitUntil: "networkidle" });
      const charts = await page.locator("svg.bench-chart").evaluateAll(readCharts);
      expect(charts.length).toBeGreaterThanOrEqual(10);
      const series: string[] = [];
      const numbers: string[] = [];
      for (const chart of charts) {
        const where = `chart under "${chart.title}"`;
        expect(chart.problems, where).toEqual([]);
        expect(chart.size.width, where).toBeGreaterThan(200);
        expect(chart.size.height, where).toBeGreaterThan(40);
        // The caption names columns of the table, and the bars are those columns, all of them.
        expect(chart.metrics.length, where).toBeGreaterThan(0);
        for (const metric of chart.metrics) expect(chart.headers, where).toContain(metric);
        expect([...new Set(chart.bars.map((b) => b.column))].sort(), where).toEqual(
          [...chart.metrics].sort(),
        );
        expect(chart.bars.length, where).toBe(chart.rows.length * chart.metrics.length);
        const label = ["library", "case"].map((n) => chart.headers.indexOf(n)).find((i) => i >= 0);
        expect(label, `${where}: a library or case column`).toBeDefined();
        const named = new Set<string>();
        for (const bar of chart.bars) {
          const row = chart.rows[bar.row];
          if (row === undefined)
            throw new Error(`${where}: bar of row ${bar.row}, not in the table`);
          // Each bar's value label is the cell of its column in its row, and its name the row's library.
          const cell = row[chart.headers.indexOf(bar.column)];
          expect(bar.value.startsWith(`${cell} `), `${where}: ${bar.value} vs cell ${cell}`).toBe(
            true,
          );
          expect(bar.label, where).toBe(row[label ?? 0]);
          if (bar.group !== "") expect(row, where).toContain(bar.group);
          named.add(`${bar.group} / ${bar.label}`);
        }
        expect(named.size, `${where}: bars that read alike`).toBe(chart.rows.length);
        for (const metric of chart.metrics) {
          const bars = chart.bars.filter((b) => b.column === metric);
          const values = bars.map((b) =>
            Number(chart.rows[b.row]?.[chart.headers.indexOf(metric)]?.replace(/,/g, "")),
          );
          expect(new Set(values).size, `${where}: ${metric} is one repeated value`).toBeGreaterThan(
            1,
          );
          // Bar lengths are in proportion to the values (one scale per chart).
          const max = Math.max(
            ...chart.bars.map((b) =>
              Number(chart.rows[b.row]?.[chart.headers.indexOf(b.column)]?.replace(/,/g, "")),
            ),
          );
          const longest = Math.max(...chart.bars.map((b) => b.width));
          bars.forEach((bar, i) => {
            expect(Math.abs(bar.width / longest - (values[i] ?? 0) / max), where).toBeLessThan(
              0.01,
            );
          });
          series.push(`${chart.title} / ${metric}`);
          numbers.push(JSON.stringify(values));
        }
      }
      // No two charts plot the same series: not the same column of one table, nor the same numbers.
      expect(series.length - new Set(series).size, series.join("\n")).toBe(0);
      expect(numbers.length - new Set(numbers).size, numbers.join("\n")).toBe(0);

      // Ratios say faster or slower by their direction: never "0.72x slower", nor "1.00x slower".
      const text = (await page.locator(".vp-doc").textContent()) ?? "";
      expect(text).not.toMatch(/\b(0\.\d+|1\.0+)x (slower|faster)\b/);

      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("the reliability page keeps the Redis-restart paragraph one paragraph", async () => {
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/guide/reliability`, { waitUntil: "networkidle" });
      const paragraph = page.locator(".vp-doc p", {
        hasText: "Redis without persistence, restarted",
      });
      await expect(paragraph.count()).resolves.toBe(1);
      const text = (await paragraph.textContent()) ?? "";
      expect(text).toMatch(
        /tokens count again\s+from 1\. The fenced store then refuses every write/,
      );
      // Nor did any of it become a list.
      const lists = await page.locator(".vp-doc ol > li:first-child").allTextContents();
      expect(lists.filter((li) => li.startsWith("The fenced store"))).toEqual([]);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it("the support table shows every backend's ttlMs floor, as its manifest gives it", async () => {
    const manifests = await manifestFloors();
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/guide/choosing-a-backend`, { waitUntil: "networkidle" });
      const table = page.locator(".vp-doc table", {
        has: page.locator("th", { hasText: "ttlMs floor" }),
      });
      const headers = await table.locator("th").allTextContents();
      const floorColumn = headers.indexOf("ttlMs floor");
      const rows = await table
        .locator("tbody tr")
        .evaluateAll((trs) =>
          trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent ?? "")),
        );
      const shown = new Map(rows.map((cells) => [cells[0] ?? "", cells[floorColumn] ?? ""]));
      expect(rows.length).toBe(manifests.length);
      for (const manifest of manifests) {
        if (manifest.floor === null) throw new Error(`${manifest.call}: no manifest`);
        const floor = `${manifest.floor.toLocaleString("en-US")}\u00a0ms`;
        expect(shown.get(`${manifest.label}${manifest.call}`), manifest.call).toBe(floor);
      }
      expect(
        manifests.some((m) => (m.floor ?? 0) > 10),
        "a backend with a floor of its own",
      ).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});

/**
 * Each configuration's ttlMs floor, read from its manifest as the docs build
 * reads it: in a process of its own, because pg does not load inside vitest.
 */
async function manifestFloors(): Promise<{ label: string; call: string; floor: number | null }[]> {
  const script = [
    'import { readManifests, ttlFloorMs } from "./scripts/capabilities.ts";',
    "const rows = await readManifests();",
    "console.log(JSON.stringify(rows.map((r) => ({ label: r.label, call: r.call,",
    '  floor: "capabilities" in r ? ttlFloorMs(r.capabilities) : null }))));',
  ].join("\n");
  const { stdout } = await promisify(execFile)(
    "node",
    ["--conditions=@locks/source", "--import", "tsx", "--input-type=module", "-e", script],
    { cwd: fileURLToPath(new URL("..", import.meta.url)) },
  );
  return JSON.parse(stdout);
}

/** What a reader sees of one benchmark chart: the table above it, its caption and its bars. */
interface ChartSeen {
  readonly title: string;
  readonly headers: string[];
  readonly rows: string[][];
  readonly metrics: string[];
  readonly bars: {
    row: number;
    column: string;
    label: string;
    group: string;
    value: string;
    width: number;
  }[];
  readonly size: { width: number; height: number };
  /** Text outside the chart's box, bars without labels, and the like. */
  readonly problems: string[];
}

/** Runs in the page, over every chart's SVG. */
function readCharts(svgs: Element[]): ChartSeen[] {
  return svgs.map((chart) => {
    const problems: string[] = [];
    const figure = chart.closest("figure") ?? chart.parentElement ?? chart;
    if (figure.querySelector("figcaption .bench-metric") === null) {
      problems.push("no caption names the column it plots");
    }
    let table: Element | null = figure.previousElementSibling;
    while (table !== null && table.tagName !== "TABLE" && !/^H[1-3]$/.test(table.tagName)) {
      table = table.previousElementSibling;
    }
    let heading: Element | null = table;
    while (heading !== null && !/^H[1-3]$/.test(heading.tagName))
      heading = heading.previousElementSibling;
    const title = heading?.textContent?.replace(/[\s\u200b#]+$/, "") ?? "";
    if (table === null || table.tagName !== "TABLE") problems.push("no table above the chart");
    const headers = [...(table?.querySelectorAll("thead th") ?? [])].map(
      (th) => th.textContent?.trim() ?? "",
    );
    const rows = [...(table?.querySelectorAll("tbody tr") ?? [])].map((tr) =>
      [...tr.querySelectorAll("td")].map((td) => td.textContent?.trim() ?? ""),
    );
    const metrics = [...figure.querySelectorAll("figcaption .bench-metric")].map(
      (m) => m.textContent?.trim() ?? "",
    );
    const svg = chart as SVGSVGElement;
    const box = svg.viewBox.baseVal;
    for (const text of svg.querySelectorAll("text")) {
      const b = (text as SVGTextElement).getBBox();
      if (
        b.x < -0.5 ||
        b.y < -0.5 ||
        b.x + b.width > box.width + 0.5 ||
        b.y + b.height > box.height + 0.5
      ) {
        problems.push(`"${text.textContent}" is outside the chart`);
      }
    }
    const groups = [...svg.querySelectorAll("text.bench-group")].map((g) => ({
      y: (g as SVGTextElement).getBBox().y,
      text: g.textContent ?? "",
    }));
    const bars = [...svg.querySelectorAll("rect.bench-bar[data-row]")].map((rect) => {
      const row = rect.getAttribute("data-row") ?? "";
      const column = rect.getAttribute("data-column") ?? "";
      const label = svg.querySelector(`text.bench-label[data-row="${row}"]`);
      const value = [...svg.querySelectorAll(`text.bench-value[data-row="${row}"]`)].find(
        (t) => t.getAttribute("data-column") === column,
      );
      if (label == null || value === undefined)
        problems.push(`bar of row ${row} without its label or value`);
      const y = label ? (label as SVGTextElement).getBBox().y : 0;
      return {
        row: Number(row),
        column,
        label: label?.textContent ?? "",
        group: groups.filter((g) => g.y < y).at(-1)?.text ?? "",
        value: value?.textContent ?? "",
        width: (rect as SVGRectElement).width.baseVal.value,
      };
    });
    const rect = svg.getBoundingClientRect();
    return {
      title,
      headers,
      rows,
      metrics,
      bars,
      size: { width: rect.width, height: rect.height },
      problems,
    };
  });
}

/** Every page the sidebar links to (the API reference's too, and the home page). */
async function siteLinks(page: Page): Promise<string[]> {
  await page.goto(`${server.url}/guide/getting-started`, { waitUntil: "networkidle" });
  const links = await page
    .locator(".VPSidebar a.link")
    .evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).href));
  return [...new Set(links)];
}

/**
 * Runs in the page: the tables wider than the content column (VitePress makes
 * a table a scrolling block, so a cut-off table is one whose content is wider
 * than its box) and figures that reach past the column.
 */
function layoutProblems(): { tables: number; problems: string[] } {
  const problems: string[] = [];
  const column = document.querySelector(".vp-doc")?.getBoundingClientRect();
  const tables = [...document.querySelectorAll(".vp-doc table")];
  for (const table of tables) {
    if (table.scrollWidth > table.clientWidth + 1) {
      const head = table.querySelector("th")?.textContent ?? "";
      problems.push(`table "${head}…" is ${table.scrollWidth} px wide in ${table.clientWidth} px`);
    }
  }
  for (const figure of document.querySelectorAll(".vp-doc figure, .vp-doc svg")) {
    const box = figure.getBoundingClientRect();
    if (column !== undefined && box.width > 0 && box.right > column.right + 1)
      problems.push(
        `a ${figure.tagName} reaches ${Math.round(box.right - column.right)} px past the column`,
      );
  }
  return { tables: tables.length, problems };
}
