import { formatNumber } from "../../bench/src/table.js";

/*
 * What the benchmark page's SVG charts share: an axis (linear, or
 * logarithmic when the values span orders of magnitude) with the ticks a
 * reader can read off.
 */

/** Above this ratio of the largest to the smallest value, an axis is logarithmic. */
const LOG_SPAN = 20;

/** An axis mapping values onto [from, to] pixels, with its ticks. */
export interface Axis {
  readonly log: boolean;
  /** The pixel position of `value`. */
  at(value: number): number;
  /** Round values inside the axis' range, each with its label. */
  readonly ticks: ReadonlyArray<{ readonly value: number; readonly label: string }>;
}

/**
 * An axis over `values` (all > 0 for a log axis) onto pixels [from, to]:
 * logarithmic when the largest is more than 20 times the smallest (or when
 * `log` says so), from 1-2-5 ticks around the values; else linear from 0.
 */
export function axisFor(values: readonly number[], from: number, to: number, log?: boolean): Axis {
  const finite = values.filter((v) => Number.isFinite(v));
  const max = Math.max(...finite);
  const positive = finite.filter((v) => v > 0);
  const min = Math.min(...positive);
  const useLog = log ?? (positive.length === finite.length && max / min > LOG_SPAN);
  if (useLog) {
    // 1-2-5 steps from below the smallest to above the largest value.
    const steps: number[] = [];
    for (let e = Math.floor(Math.log10(min)) - 1; e <= Math.ceil(Math.log10(max)); e++) {
      for (const m of [1, 2, 5]) steps.push(m * 10 ** e);
    }
    const lo = steps.filter((s) => s <= min).at(-1) ?? min;
    const hi = steps.find((s) => s >= max) ?? max;
    const span = Math.log10(hi) - Math.log10(lo) || 1;
    const at = (v: number): number =>
      from + ((Math.log10(v) - Math.log10(lo)) / span) * (to - from);
    // Every 1-2-5 step up to about three decades, else the powers of ten and both ends.
    const decades = Math.log10(hi / lo);
    const shown = steps.filter(
      (s) =>
        s >= lo * 0.999 &&
        s <= hi * 1.001 &&
        (decades <= 3.2 || isPowerOfTen(s) || s === lo || s === hi),
    );
    return { log: true, at, ticks: shown.map((value) => ({ value, label: tickText(value) })) };
  }
  const step = niceStep(max / 5);
  const hi = Math.ceil(max / step) * step || 1;
  const at = (v: number): number => from + (v / hi) * (to - from);
  const ticks = [];
  for (let v = 0; v <= hi + step / 2; v += step) ticks.push({ value: v, label: tickText(v) });
  return { log: false, at, ticks };
}

function isPowerOfTen(value: number): boolean {
  return Math.abs(Math.log10(value) - Math.round(Math.log10(value))) < 1e-9;
}

/** The 1-2-5 step at or above `raw`. */
function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
}

/** A tick label: no float noise (0.30000000000000004), thousands separated. */
function tickText(value: number): string {
  if (value >= 1000) return Math.round(value).toLocaleString("en-US");
  return String(Number(value.toPrecision(6)));
}

/** A value as the tables print it, so that a chart's label reads as its table cell. */
export function valueText(value: number): string {
  return formatNumber(value);
}
