import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Every server process group and temporary directory this process created.
 * They are removed when their server stops, and, as a last resort, when the
 * test runner exits (synchronously, on 'exit'), is interrupted (SIGINT,
 * SIGTERM, SIGHUP), or dies without running any handler (SIGKILL): a small
 * detached shell watches this process and cleans up after it.
 */
const groups = new Set<number>();
const dirs = new Set<string>();

let installed = false;
let reaper: { pid: number; stateDir: string; stateFile: string } | undefined;

const REAPER_SCRIPT = `
parent="$1"; state="$2"
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
if [ -f "$state" ]; then
  while read -r kind value; do
    [ "$kind" = group ] && kill -KILL "-$value" 2>/dev/null
  done < "$state"
  while read -r kind value; do
    [ "$kind" = dir ] && rm -rf -- "$value"
  done < "$state"
fi
rm -rf -- "$(dirname "$state")"
`;

function writeState(): void {
  if (!reaper) return;
  const lines = [...[...groups].map((g) => `group ${g}`), ...[...dirs].map((d) => `dir ${d}`)];
  try {
    writeFileSync(reaper.stateFile, lines.length ? `${lines.join("\n")}\n` : "");
  } catch {
    // the reaper is a fallback only
  }
}

function startReaper(): void {
  if (reaper || process.env.LOCKS_TESTKIT_NO_REAPER) return;
  try {
    const stateDir = mkdtempSync(join(tmpdir(), "locks-testkit-reaper-"));
    const stateFile = join(stateDir, "state");
    writeFileSync(stateFile, "");
    const child = spawn("sh", ["-c", REAPER_SCRIPT, "reaper", String(process.pid), stateFile], {
      detached: true,
      stdio: "ignore",
    });
    child.on("error", () => {});
    child.unref();
    if (child.pid === undefined) {
      rmSync(stateDir, { recursive: true, force: true });
      return;
    }
    reaper = { pid: child.pid, stateDir, stateFile };
  } catch {
    reaper = undefined;
  }
}

/** Kills every tracked process group and removes every tracked directory, synchronously. */
export function cleanupAllSync(): void {
  for (const group of groups) {
    try {
      process.kill(-group, "SIGKILL");
    } catch {
      // already gone
    }
  }
  groups.clear();
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort
    }
  }
  dirs.clear();
  if (reaper) {
    try {
      process.kill(reaper.pid, "SIGKILL");
    } catch {
      // already gone
    }
    rmSync(reaper.stateDir, { recursive: true, force: true });
    reaper = undefined;
  }
}

function onSignal(signal: NodeJS.Signals): void {
  cleanupAllSync();
  // When nobody else handles the signal, keep its default meaning: terminate.
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal);
    process.kill(process.pid, signal);
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.once("exit", cleanupAllSync);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
  startReaper();
}

/** Tracks a process group (its leader's pid) until {@link untrackGroup}. */
export function trackGroup(pgid: number): void {
  install();
  groups.add(pgid);
  writeState();
}

export function untrackGroup(pgid: number): void {
  if (groups.delete(pgid)) writeState();
}

/** Tracks a directory to remove at exit until {@link untrackDir}. */
export function trackDir(dir: string): void {
  install();
  dirs.add(dir);
  writeState();
}

export function untrackDir(dir: string): void {
  if (dirs.delete(dir)) writeState();
}

/** Removes a tracked directory now. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  untrackDir(dir);
}

/** A fresh private directory under os.tmpdir(), removed at exit at the latest. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `locks-${prefix}-`));
  trackDir(dir);
  return dir;
}

/** For tests: how many process groups and directories are tracked now. */
export function trackedCounts(): { groups: number; dirs: number } {
  return { groups: groups.size, dirs: dirs.size };
}
