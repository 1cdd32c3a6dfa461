import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/*
 * The TypeScript code samples of the docs' pages. A fence opens with
 * ```ts (or ```typescript) and may carry words after the language:
 *   no-check  a deliberately partial snippet: shown, never compiled (keep these few)
 *   run       also executed by test/samples.test.ts; a following ```text output
 *             block is what it must print
 *   postgres  (with run) needs a PostgreSQL: the test starts one and passes
 *             its URL in DATABASE_URL
 *   redis     (with run) needs a redis-server: its URL in REDIS_URL
 * The generated API reference (api/) is not ours to check: its snippets come
 * from the packages' TSDoc.
 */

/** The docs directory (the VitePress source root). */
export const docsRoot: string = fileURLToPath(new URL("..", import.meta.url));

/** Where samples are written for tsc and for running: ignored by git and Biome. */
export const samplesDir: string = join(docsRoot, ".vitepress", "cache", "samples");

/** A server a runnable sample needs, named by a word after ```ts run. */
export type SampleServer = "postgres" | "redis";

/** The fence words that name a server, in the order a test starts them. */
export const SAMPLE_SERVERS: readonly SampleServer[] = ["postgres", "redis"];

export interface Sample {
  /** The page, relative to docs/: "guide/getting-started.md". */
  readonly page: string;
  /** 1-based line of the first line of code (the line after the fence). */
  readonly line: number;
  readonly code: string;
  readonly check: boolean;
  readonly run: boolean;
  /** The servers a `run` sample needs (```ts run postgres): none for the thread backend. */
  readonly servers: readonly SampleServer[];
  /** The ```text output block right after a `run` sample, if any. */
  readonly output: string | undefined;
  /** A file name unique to this sample: "guide-getting-started-1.ts". */
  readonly fileName: string;
}

const SKIP_DIRS = new Set(["node_modules", "api", ".vitepress", "test", "scripts", "examples"]);

/**
 * Every page of the site under docs/, except the generated API reference
 * (its landing page, api/index.md, is written by hand: that one is in) and
 * this package's README.
 */
export function markdownPages(dir: string = docsRoot): string[] {
  const pages: string[] = [];
  const apiLanding = join(docsRoot, "api", "index.md");
  if (dir === docsRoot && existsSync(apiLanding)) pages.push(apiLanding);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".")) {
        pages.push(...markdownPages(join(dir, entry.name)));
      }
    } else if (entry.name.endsWith(".md") && !(dir === docsRoot && entry.name === "README.md")) {
      pages.push(join(dir, entry.name));
    }
  }
  return pages.sort();
}

interface Fence {
  readonly lang: string;
  readonly words: readonly string[];
  readonly line: number;
  readonly code: string;
}

/** The fenced code blocks of one Markdown text, in order. */
export function fences(markdown: string): Fence[] {
  const lines = markdown.split("\n");
  const found: Fence[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w-]*)(.*)$/.exec(lines[i]!);
    if (open === null) continue;
    const [, indent, marker, lang, rest] = open as unknown as [
      string,
      string,
      string,
      string,
      string,
    ];
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !lines[j]!.trim().startsWith(marker)) {
      body.push(lines[j]!.startsWith(indent) ? lines[j]!.slice(indent.length) : lines[j]!);
      j++;
    }
    // VitePress meta such as {1,3} or [title] is not a word for us.
    const words = rest
      .replace(/\{[^}]*\}|\[[^\]]*\]/g, " ")
      .split(/\s+/)
      .filter((w) => w.length > 0);
    found.push({ lang: lang.toLowerCase(), words, line: i + 2, code: body.join("\n") });
    i = j;
  }
  return found;
}

const WORDS: ReadonlySet<string> = new Set(["no-check", "run", ...SAMPLE_SERVERS]);

/**
 * Refuses a word this file does not know (`run postgress` would otherwise run
 * without its server) and a server named on a sample that does not run.
 */
function checkWords(words: readonly string[], where: string): void {
  const unknown = words.filter((word) => !WORDS.has(word));
  if (unknown.length > 0) {
    throw new Error(`${where}: unknown word(s) after \`\`\`ts: ${unknown.join(", ")}`);
  }
  const server = words.find((word) => (SAMPLE_SERVERS as readonly string[]).includes(word));
  if (server !== undefined && !words.includes("run")) {
    throw new Error(`${where}: "${server}" names the server of a sample that runs: add "run"`);
  }
}

/** Every TypeScript sample of the docs' pages. */
export function collectSamples(pages: readonly string[] = markdownPages()): Sample[] {
  const samples: Sample[] = [];
  for (const path of pages) {
    const page = relative(docsRoot, path).split("\\").join("/");
    const blocks = fences(readFileSync(path, "utf8"));
    let n = 0;
    blocks.forEach((block, index) => {
      if (block.lang !== "ts" && block.lang !== "typescript") return;
      n++;
      checkWords(block.words, `${page}:${block.line - 1}`);
      const run = block.words.includes("run");
      const next = blocks[index + 1];
      const output =
        run && next !== undefined && next.lang === "text" && next.words.includes("output")
          ? next.code
          : undefined;
      samples.push({
        page,
        line: block.line,
        code: block.code,
        check: !block.words.includes("no-check"),
        run,
        servers: run ? SAMPLE_SERVERS.filter((server) => block.words.includes(server)) : [],
        output,
        fileName: `${page.replace(/\.md$/, "").replace(/[^\w]+/g, "-")}-${n}.ts`,
      });
    });
  }
  return samples;
}

/**
 * The file written for a sample. Each is a module of its own (so top-level
 * await works and samples never share names); the code keeps its line
 * numbers, so a compiler error maps straight back to the page.
 */
export function sampleSource(sample: Sample): string {
  return `${sample.code}\nexport {};\n`;
}
