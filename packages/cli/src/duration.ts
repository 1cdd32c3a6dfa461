import { UsageError } from "./usage-error.js";

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const BARE_NUMBER = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
const PART = /(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)/gy;

/** setTimeout's ceiling (about 24.8 days). */
export const MAX_DURATION_MS = 2_147_483_647;

/**
 * Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `1d` or `1m30s`; a
 * bare number is seconds (`2.5` = 2500 ms). Returns whole milliseconds
 * (rounded up) and throws a `UsageError` naming `option` for anything else.
 *
 * @group Durations
 */
export function parseDuration(text: string, option: string): number {
  const value = text.trim();
  let ms: number | undefined;
  if (BARE_NUMBER.test(value)) {
    ms = Number(value) * 1_000;
  } else if (value !== "") {
    PART.lastIndex = 0;
    let total = 0;
    let end = 0;
    for (let match = PART.exec(value); match !== null; match = PART.exec(value)) {
      total += Number(match[1]) * (UNIT_MS[match[2] ?? ""] ?? Number.NaN);
      end = PART.lastIndex;
    }
    if (end === value.length && end > 0) ms = total;
  }
  if (ms === undefined || !Number.isFinite(ms)) {
    throw new UsageError(
      `${option} ${JSON.stringify(text)} is not a duration: use e.g. 500ms, 30s, 5m, 1h (a bare number is seconds)`,
    );
  }
  const rounded = Math.ceil(ms);
  if (rounded > MAX_DURATION_MS) {
    throw new UsageError(`${option} ${JSON.stringify(text)} is too long: at most 24d`);
  }
  return rounded;
}

/**
 * Formats milliseconds for messages: `750ms`, `30s`, `1.5s`, `5m`, `2h10m`.
 *
 * @group Durations
 */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1_000).toFixed(1))}s`;
  const totalSeconds = Math.round(ms / 1_000);
  const h = Math.floor(totalSeconds / 3_600);
  const m = Math.floor((totalSeconds % 3_600) / 60);
  const s = totalSeconds % 60;
  return [h > 0 ? `${h}h` : "", m > 0 ? `${m}m` : "", s > 0 ? `${s}s` : ""].join("") || "0s";
}
