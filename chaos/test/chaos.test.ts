import { describe, expect, it } from "vitest";
import { failureReport, runScenario } from "../src/run.js";
import { scenarios } from "../src/scenarios.js";
import { formatResults, timelineCounts } from "../src/timeline.js";

// CI budget: about 2 minutes on 2 cores for every backend together. CHAOS_SEED replays a run;
// CHAOS_DURATION (seconds of faults over all scenarios) makes it longer.
const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const totalMs = Number(process.env.CHAOS_DURATION ?? "60") * 1000;
const weights = scenarios.reduce((sum, s) => sum + s.weight, 0);

describe(`chaos (seed ${seed})`, () => {
  for (const [i, def] of scenarios.entries()) {
    const durationMs = Math.round((totalMs * def.weight) / weights);
    it(`${def.name}: guarantees hold under faults`, { timeout: durationMs + 90_000 }, async () => {
      const summary = await runScenario(def, { seed: seed + i, durationMs });
      if (!summary.passed) console.error(failureReport(summary));
      expect(summary.violations.map((v) => `${v.kind}: ${v.message}`)).toEqual([]);
      expect(summary.holds).toBeGreaterThan(0);
      // The timeline the docs draw tells the same story as the counts.
      const counts = timelineCounts(summary.timeline);
      expect(counts.holds).toBe(summary.holds);
      expect(counts.refused).toBe(summary.writes.refusedStale);
      expect(counts.overlaps).toEqual({
        "stale-refused": summary.overlaps.staleRefused,
        "landed-first": summary.overlaps.landedFirst,
        documented: summary.overlaps.documented,
        violation: summary.violations.filter((v) => v.kind === "overlap").length,
      });
      expect(summary.timeline.faults.length).toBe(summary.schedule.length);
      for (const f of summary.schedule) expect(f.end).toBeGreaterThanOrEqual(f.at);
      expect(JSON.parse(formatResults(summary))).toEqual(JSON.parse(JSON.stringify(summary)));
    });
  }
});
