import { formatDuration } from "./duration.js";
import { write } from "./report.js";

/** Stops a progress line and clears it from the terminal (idempotent). */
export type StopProgress = () => void;

const FIRST_AFTER_MS = 1_000;

/**
 * Shows `locks: waiting for "key"... 3s` on stderr, rewritten every second,
 * once the wait (begun at `start`, a `performance.now()` instant) has lasted
 * a second, and only when stderr is a terminal.
 */
export function showProgress(key: string, start: number, enabled: boolean): StopProgress {
  if (!enabled || !process.stderr.isTTY) return () => {};
  let shown = false;
  const draw = (): void => {
    shown = true;
    // Rounded, not floored: timers may fire a little early, and "0ms" after a second reads wrong.
    const waited = formatDuration(Math.round((performance.now() - start) / 1_000) * 1_000);
    write("stderr", `\r\x1b[2Klocks: waiting for ${JSON.stringify(key)}... ${waited}`);
  };
  let interval: NodeJS.Timeout | undefined;
  const first = setTimeout(
    () => {
      draw();
      interval = setInterval(draw, 1_000);
      interval.unref();
    },
    Math.max(0, start + FIRST_AFTER_MS - performance.now()),
  );
  first.unref();
  return () => {
    clearTimeout(first);
    if (interval !== undefined) clearInterval(interval);
    if (shown) write("stderr", "\r\x1b[2K");
    shown = false;
  };
}
