import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type StaticServer, serveStatic } from "./static-server.js";

/*
 * The built site (pnpm --filter @locks/docs build), served as a static host
 * would serve it and driven in Debian's headless Chromium: a reader opens the
 * home page, searches, follows a link to a backend page, and nothing on the
 * way logs an error to the console.
 */

const dist = fileURLToPath(new URL("../.vitepress/dist", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let server: StaticServer;
let browser: BrowserContext;
let profile: string;
let shots: string;

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
  shots = mkdtempSync(join(tmpdir(), "locks-docs-shots-"));
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
  if (shots) rmSync(shots, { recursive: true, force: true });
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

  it("every page in the sidebar loads without a console error", async () => {
    const { page, errors } = await openPage();
    try {
      await page.goto(`${server.url}/guide/getting-started`, { waitUntil: "networkidle" });
      const links = await page
        .locator(".VPSidebar a.link")
        .evaluateAll((as) => [...new Set(as.map((a) => (a as HTMLAnchorElement).href))]);
      expect(links.length).toBeGreaterThan(10);
      for (const link of links) {
        const response = await page.goto(link, { waitUntil: "load" });
        expect(response?.status(), link).toBe(200);
        await page.locator(".vp-doc h1").first().waitFor();
      }
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
