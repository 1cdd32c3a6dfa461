import { describe, expect, it } from "vitest";
import type { Timeline } from "../../chaos/src/timeline.js";
import { pickDetail } from "../scripts/timeline/detail.js";
import { drawTimeline } from "../scripts/timeline/draw.js";
import { type ChaosResult, readChaosResults, renderReliability } from "../scripts/timeline.js";

/*
 * The reliability page's timelines, drawn from the committed chaos results
 * and from a small hand-made run: one bar per hold, one cross per refused
 * write, one highlight per overlap, one mark per fault, x growing with time,
 * every text escaped, and a zoom that shows a refused write when the run has
 * one. The built page is checked in Chromium by site.test.ts.
 */

const results = readChaosResults();

/** How often an element with this class opens in `svg`. */
function countClass(svg: string, element: string, cls: string): number {
  return svg.match(new RegExp(`<${element} class="${cls}[" ]`, "g"))?.length ?? 0;
}

/** Each scenario's section of the generated page, by scenario name. */
function sections(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of markdown.split(/^### /m).slice(1)) {
    out.set(part.slice(0, part.indexOf(" ")), part);
  }
  return out;
}

const svgsOf = (section: string): string[] =>
  section.match(/<svg class="timeline[ "][\s\S]*?<\/svg>/g) ?? [];

/** x of every hold bar, in document order. */
const holdXs = (svg: string): number[] =>
  [...svg.matchAll(/<rect class="timeline-hold"[^>]* x="([\d.]+)"/g)].map((m) => Number(m[1]));

/** A run small enough to check by hand: a pause, a takeover, a refused write, a server fault. */
function handMade(): ChaosResult {
  const timeline: Timeline = {
    end: 3_000,
    processes: [
      { id: "c0.0", slot: 0, spawned: 0, exited: 2_990, killed: null },
      { id: "c1.1", slot: 1, spawned: 1, exited: 2_995, killed: null },
    ],
    holds: [
      {
        process: "c0.0",
        seq: 1,
        token: "1",
        from: 100,
        to: 110,
        end: "released",
        write: "accepted",
        ack: 108,
      },
      {
        process: "c0.0",
        seq: 2,
        token: "2",
        from: 200,
        to: 1_400,
        end: "lost",
        write: "refused",
        ack: 1_402,
      },
      {
        process: "c1.1",
        seq: 1,
        token: "3",
        from: 1_210,
        to: 1_230,
        end: "released",
        write: "accepted",
        ack: 1_225,
      },
      {
        process: "c1.1",
        seq: 2,
        token: "4",
        from: 1_500,
        to: null,
        end: "open",
        write: "none",
        ack: null,
      },
    ],
    faults: [
      {
        kind: "pause",
        target: "c0.0",
        process: "c0.0",
        start: 200.5,
        end: 1_399,
        note: "holder of token 2",
      },
      { kind: "server-restart", target: "redis", process: null, start: 2_000, end: 2_050 },
    ],
    overlaps: [
      { verdict: "stale-refused", older: "c0.0#2", newer: "c1.1#1", from: 1_210, to: 1_230 },
    ],
  };
  return {
    name: "hand-made",
    backend: "@locks/thread",
    description: "two processes",
    seed: 1,
    durationMs: 3_000,
    clients: 2,
    ttlMs: 1_000,
    holds: 3,
    acquireTimeouts: 0,
    acquireErrors: 0,
    acquireErrorsByCode: {},
    faults: { pause: 1, "server-restart": 1 },
    overlaps: { total: 1, staleRefused: 1, landedFirst: 0, documented: 0 },
    tokenRegressions: 0,
    tokensAfterFaults: {},
    writes: { accepted: 2, refusedStale: 1, failed: 0 },
    lostLeases: { count: 1, lateMs: null, afterResumeMs: null },
    takeoverAfterKillMs: null,
    timeOriginSkewMs: null,
    finalWrite: { expected: "3=c1.1#1", found: "3=c1.1#1" },
    violations: [],
    documentedLimits: [],
    schedule: timeline.faults.map((f) => ({
      at: f.start,
      end: f.end,
      kind: f.kind,
      target: f.target,
    })),
    passed: true,
    timeline,
  };
}

describe("timelines from chaos/results", () => {
  const page = renderReliability(results, "chaos/results");
  const bySection = sections(page.scenarios);

  it("every scenario has results with a timeline", () => {
    expect(results.length).toBeGreaterThanOrEqual(7);
    for (const r of results) expect(r.timeline, r.name).toBeDefined();
  });

  it("the overview draws every hold, refused write, overlap and fault once", () => {
    for (const r of results) {
      const t = r.timeline as Timeline;
      const overview = svgsOf(bySection.get(r.name) ?? "")[0] ?? "";
      expect(countClass(overview, "rect", "timeline-hold"), r.name).toBe(t.holds.length);
      expect(countClass(overview, "path", "timeline-refused"), r.name).toBe(r.writes.refusedStale);
      expect(countClass(overview, "g", "timeline-overlap"), r.name).toBe(r.overlaps.total);
      expect(countClass(overview, "g", "timeline-fault"), r.name).toBe(r.schedule.length);
    }
  });

  it("bars and ticks go left to right in time order", () => {
    for (const r of results) {
      for (const svg of svgsOf(bySection.get(r.name) ?? "")) {
        const xs = holdXs(svg);
        expect(xs.length, r.name).toBeGreaterThan(0);
        for (let i = 1; i < xs.length; i++)
          expect(xs[i], r.name).toBeGreaterThanOrEqual(xs[i - 1] ?? 0);
        const ticks = [...svg.matchAll(/class="timeline-tick" x="([\d.]+)"[^>]*>([\d.]+) s</g)];
        expect(ticks.length, r.name).toBeGreaterThan(1);
        for (let i = 1; i < ticks.length; i++) {
          expect(Number(ticks[i]?.[1])).toBeGreaterThan(Number(ticks[i - 1]?.[1]));
          expect(Number(ticks[i]?.[2])).toBeGreaterThan(Number(ticks[i - 1]?.[2]));
        }
      }
    }
  });

  it("the zoomed detail shows a refused write whenever a paused holder's write was refused", () => {
    for (const r of results) {
      const t = r.timeline as Timeline;
      const pausedRefused = t.faults.some(
        (f) =>
          f.kind === "pause" &&
          t.holds.some(
            (h) => h.process === f.process && h.from <= f.start && h.write === "refused",
          ),
      );
      const detail = pickDetail(t, r.ttlMs);
      if (!pausedRefused) continue;
      expect(detail?.hold.write, r.name).toBe("refused");
      const ack = detail?.hold.ack ?? Number.NaN;
      expect(ack).toBeGreaterThanOrEqual(detail?.from ?? 0);
      expect(ack).toBeLessThanOrEqual(detail?.to ?? 0);
      const zoom = svgsOf(bySection.get(r.name) ?? "")[1] ?? "";
      expect(countClass(zoom, "path", "timeline-refused"), r.name).toBeGreaterThan(0);
      expect(zoom).toContain(`token ${detail?.hold.token}`);
    }
  });

  it("leads with the sentence a reader needs, then a table of six columns", () => {
    const faults = results.reduce(
      (n, r) => n + Object.values(r.faults).reduce((a, b) => a + b, 0),
      0,
    );
    expect(page.summary).toContain(
      `Across ${results.length} scenarios and ${faults} injected faults`,
    );
    const header = page.summary.split("\n").find((l) => l.startsWith("| scenario"));
    expect(header?.split("|").length).toBe(8);
  });
});

describe("timelines from a hand-made run", () => {
  const run = handMade();
  const t = run.timeline as Timeline;

  it("draws each item once, and the open hold too", () => {
    const svg = drawTimeline(t, { from: 0, to: t.end, detail: false, label: "hand-made" });
    expect(countClass(svg, "rect", "timeline-hold")).toBe(4);
    expect(svg).toContain('data-end="open"');
    expect(countClass(svg, "path", "timeline-refused")).toBe(1);
    expect(countClass(svg, "g", "timeline-overlap")).toBe(1);
    expect(countClass(svg, "g", "timeline-fault")).toBe(2);
    expect(holdXs(svg)).toEqual([...holdXs(svg)].sort((a, b) => a - b));
  });

  it("zooms into the pause and tells it with the tokens", () => {
    const detail = pickDetail(t, run.ttlMs);
    expect(detail?.hold).toMatchObject({ process: "c0.0", token: "2" });
    expect(detail?.from).toBeLessThanOrEqual(1_210);
    expect(detail?.to).toBeGreaterThanOrEqual(1_402);
    expect(detail?.caption).toMatch(
      /c0\.0 was granted token 2 .* c1\.1 was granted the key at 1\.210 s with token 3/,
    );
    expect(detail?.caption).toContain("refused its write with token 2");
  });

  it("escapes every text it writes", () => {
    const evil = '<script>alert("x")</script>{{ boom }}&';
    const timeline: Timeline = {
      ...t,
      faults: t.faults.map((f) => ({ ...f, target: evil, note: evil })),
    };
    const tampered: ChaosResult = {
      ...run,
      name: `bad${evil}`,
      backend: evil,
      description: evil,
      documentedLimits: [evil],
      acquireErrorsByCode: { [evil]: { count: 1, example: evil } },
      violations: [{ kind: evil, message: evil, holds: [] }],
      timeline,
    };
    const { summary, scenarios } = renderReliability([tampered], evil);
    for (const text of [summary, scenarios]) {
      expect(text).not.toContain("<script");
      expect(text).not.toContain("{{");
      expect(text).not.toContain('alert("x")');
      expect(text.match(/<svg/g)?.length ?? 0).toBe(text.match(/<\/svg>/g)?.length ?? 0);
    }
    expect(scenarios).toContain("&lt;script&gt;");
  });
});
