/*
 * What every timeline drawing needs: the time scale and its ticks, and how
 * times are written (escaping and the SVG root: ../svg.ts).
 */

/** A time in ms since the scenario started, as seconds: "4.724 s". */
export function seconds(ms: number, digits = 3): string {
  return `${(ms / 1000).toFixed(digits)} s`;
}

/** A count with thousands separators. */
export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** Maps the time window [from, to] (ms) onto [x0, x0 + width] (SVG units). */
export interface TimeScale {
  readonly from: number;
  readonly to: number;
  readonly x0: number;
  readonly width: number;
  x(ms: number): number;
  /** x of `ms` held inside the plot. */
  clamp(ms: number): number;
}

export function timeScale(from: number, to: number, x0: number, width: number): TimeScale {
  const span = Math.max(to - from, 1);
  const x = (ms: number): number => round1(x0 + ((ms - from) / span) * width);
  return {
    from,
    to,
    x0,
    width,
    x,
    clamp: (ms) => x(Math.min(Math.max(ms, from), to)),
  };
}

/** One decimal: enough for a drawing, and a tenth of the bytes of full precision. */
export function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

const STEPS_MS = [50, 100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000];

/** The step between ticks: the smallest that gives at most `most` ticks over the window. */
export function tickStep(from: number, to: number, most: number): number {
  const span = to - from;
  return STEPS_MS.find((step) => span / step <= most) ?? STEPS_MS.at(-1) ?? 60_000;
}

/** Tick times (ms): multiples of the step inside the window. */
export function ticks(from: number, to: number, step: number): number[] {
  const out: number[] = [];
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) out.push(t);
  return out;
}

/** A tick's label: as many decimals as the step needs ("2 s", "4.5 s", "4.25 s"). */
export function tickLabel(ms: number, step: number): string {
  const digits = step >= 1_000 ? 0 : step >= 100 ? 1 : 2;
  return `${(ms / 1000).toFixed(digits)} s`;
}
