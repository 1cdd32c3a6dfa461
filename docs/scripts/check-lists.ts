import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createMarkdownRenderer } from "vitepress";
import { docsRoot, markdownPages } from "./samples.js";

/*
 * Markdown lets a list start in the middle of a paragraph: a wrapped line that
 * happens to begin with "1. " or "- " turns the rest of the paragraph into a
 * list (reliability.md's "tokens start again from" / "1. The fenced store"
 * did). Every list on the site follows a blank line, so a list that directly
 * continues a paragraph is such an accident. Parsed with the site's own
 * renderer; run before every build (`pnpm build` fails on one) and by
 * test/check-lists.test.ts.
 *
 *   node --import tsx scripts/check-lists.ts [page.md ...]   (default: every page)
 */

/** A list that starts on the line right after a paragraph's last line. */
export interface Accident {
  readonly page: string;
  /** 1-based. */
  readonly line: number;
  readonly text: string;
}

const generated = join(docsRoot, ".vitepress", "generated");

/** The hand-written pages and, once `pnpm generate` ran, the generated ones they include. */
export function sitePages(): string[] {
  const extra = existsSync(generated)
    ? readdirSync(generated)
        .filter((name) => name.endsWith(".md"))
        .map((name) => join(generated, name))
    : [];
  return [...markdownPages(), ...extra];
}

/** Lists that continue a paragraph, in the given pages. */
export async function listsInsideParagraphs(pages: readonly string[]): Promise<Accident[]> {
  const md = await createMarkdownRenderer(docsRoot);
  const found: Accident[] = [];
  for (const page of pages) {
    // Front matter is YAML, not Markdown: blank it out, keeping the line numbers.
    const body = readFileSync(page, "utf8").replace(/^---\n[\s\S]*?\n---\n/, (fm) =>
      fm.replace(/[^\n]/g, ""),
    );
    const lines = body.split("\n");
    const tokens = md.parse(body, { path: page, relativePath: relative(docsRoot, page) });
    const open: string[] = [];
    let paragraphEnd = -1;
    for (const token of tokens) {
      if (token.type === "paragraph_open") paragraphEnd = token.map?.[1] ?? -1;
      const isList = token.type === "ordered_list_open" || token.type === "bullet_list_open";
      // A list nested in a list item may follow the item's text: that is how nesting is written.
      const start = token.map?.[0];
      if (isList && start === paragraphEnd && open.at(-1) !== "list_item_open") {
        found.push({ page, line: start + 1, text: lines[start] ?? "" });
      }
      if (token.nesting === 1) open.push(token.type);
      if (token.nesting === -1) open.pop();
    }
  }
  return found;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2).map((p) => resolve(p));
  const accidents = await listsInsideParagraphs(args.length > 0 ? args : sitePages());
  for (const a of accidents) {
    console.error(
      `${relative(docsRoot, a.page)}:${a.line}: a list starts inside a paragraph ` +
        `(rewrap the line, or put a blank line before the list): ${a.text}`,
    );
  }
  if (accidents.length > 0) process.exit(1);
}
