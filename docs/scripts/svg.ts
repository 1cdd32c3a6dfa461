/*
 * What every drawing of the site (benchmark charts, fault timelines) needs to
 * be inline SVG inside a Markdown page that VitePress compiles as a Vue
 * template. SVG is written as strings: no dependency.
 */

/**
 * Text for SVG or HTML, element content or attribute: no markup, and no Vue
 * interpolation either (VitePress compiles every page as a Vue template).
 */
export function escapeXml(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;")
    .replace(/\{/g, "&#123;")
    .replace(/\}/g, "&#125;");
}

/**
 * Text for a Markdown paragraph or table cell: escaped as HTML, and no Markdown syntax inside a
 * line (`#` is left alone: it is only syntax at a line's start, and entities contain it).
 */
export function escapeMarkdown(text: string): string {
  return escapeXml(text).replace(/[\\`*_[\]|]/g, (c) => `\\${c}`);
}

/**
 * The root of a drawing: scales to the column (viewBox, width 100%), named
 * by `label` for screen readers and by `title` on hover; the marks inside are
 * hidden from screen readers, which read the label (a chart's numbers are in
 * the table beside it). No role="img": Vue cannot stringify an attribute it
 * does not know, and VitePress would then ship the whole drawing a second
 * time as render code (a megabyte for the fault timelines).
 */
export function svgRoot(
  className: string,
  size: { readonly width: number; readonly height: number },
  text: { readonly label: string; readonly title: string },
  body: string,
): string {
  return (
    `<svg class="${className}" viewBox="0 0 ${size.width} ${size.height}" width="100%" ` +
    `aria-label="${escapeXml(text.label)}"><title>${escapeXml(text.title)}</title>` +
    `<g aria-hidden="true">${body}</g></svg>`
  );
}
