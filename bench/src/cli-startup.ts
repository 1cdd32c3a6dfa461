import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RedisServer, startRedis } from "@locks/testkit";
import { median } from "./harness.js";
import type { BenchSuite, BenchTable } from "./table.js";

/*
 * What `locks` costs a shell script per call: wall time, CPU time (user +
 * system) and peak RSS of one short-lived process, beside `node -e 0` (the
 * floor of any Node program) and flock(1). The built CLI (packages/cli/dist,
 * what the `locks` bin runs) is measured, not the TypeScript sources.
 */

/** LOCKS_BENCH_CLI=<path of a cli.cjs or cli.js> measures another build (an older one, for a before/after). */
const CLI =
  process.env.LOCKS_BENCH_CLI ??
  fileURLToPath(new URL("../../packages/cli/dist/cli.cjs", import.meta.url));
const RUNS = 20;

/**
 * Runs the command under GNU time (peak RSS of the command: wait4's
 * ru_maxrss covers the reaped child) inside bash, which times the command
 * alone: $EPOCHREALTIME around it (µs; bash's own start-up is left out) and
 * `times` for the children's CPU (getrusage, ms as printed).
 */
const MEASURE = `exec 3>"$0"; t0=$EPOCHREALTIME; "$@"; s=$?; t1=$EPOCHREALTIME; echo "$t0 $t1" >&3; times >&3; exit $s`;

interface Sample {
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly rssMiB: number;
}

/** A command line and what it adds to the environment. */
interface Command {
  readonly argv: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}

async function measureOnce(dir: string, command: Command): Promise<Sample> {
  const cpuFile = join(dir, "cpu");
  const rssFile = join(dir, "rss");
  const child = spawn(
    "/usr/bin/time",
    ["-f", "%M", "-o", rssFile, "bash", "-c", MEASURE, cpuFile, ...command.argv],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...command.env } },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  if (code !== 0) {
    throw new Error(`${command.argv.join(" ")} exited ${code}: ${stderr}`);
  }
  const [times, , children] = (await readFile(cpuFile, "utf8")).trim().split("\n");
  const [t0, t1] = times!.split(" ").map(Number);
  // `times` prints "0m0.123s 0m0.004s": user, then system.
  const cpuMs = [...children!.matchAll(/(\d+)m([\d.]+)s/g)]
    .map(([, minutes, seconds]) => (Number(minutes) * 60 + Number(seconds)) * 1000)
    .reduce((a, b) => a + b, 0);
  const rssKiB = Number((await readFile(rssFile, "utf8")).trim().split("\n").at(-1));
  return { wallMs: (t1! - t0!) * 1000, cpuMs, rssMiB: rssKiB / 1024 };
}

/**
 * The medians of RUNS runs of each command, taken in rounds (each command once
 * per round, after one unmeasured round that warms the page cache), so that
 * load from elsewhere on the machine weighs on all of them alike.
 */
async function measureAll(dir: string, commands: readonly Command[]): Promise<Sample[]> {
  const samples: Sample[][] = commands.map(() => []);
  for (let round = 0; round <= RUNS; round++) {
    for (const [i, command] of commands.entries()) {
      const sample = await measureOnce(dir, command);
      if (round > 0) samples[i]!.push(sample);
    }
  }
  return samples.map((runs) => ({
    wallMs: median(runs.map((s) => s.wallMs)),
    cpuMs: median(runs.map((s) => s.cpuMs)),
    rssMiB: median(runs.map((s) => s.rssMiB)),
  }));
}

const suite: BenchSuite = async () => {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: run pnpm --filter @locks/cli build first`);
  }
  const dir = await mkdtemp(join(tmpdir(), "locks-bench-cli-"));
  const fromEnv = process.env.REDIS_URL;
  const servers: RedisServer[] = [];
  if (fromEnv === undefined) servers.push(await startRedis());
  const redisUrl = fromEnv ?? servers[0]!.url;
  const node = process.execPath;
  const file = `file://${dir}/locks`;
  // The bin's code cache (made by the unmeasured first round), in this run's directory.
  const env = { LOCKS_COMPILE_CACHE: join(dir, "compile-cache") };
  try {
    const commands: Array<[string, Command]> = [
      ["node -e 0", { argv: [node, "-e", "0"] }],
      ["flock(1) <file> true", { argv: ["flock", join(dir, "flock"), "true"] }],
      [
        "locks run --backend file:// k -- true",
        { argv: [node, CLI, "run", "--backend", file, "k", "--", "true"], env },
      ],
      [
        "the same without the code cache",
        {
          argv: [node, CLI, "run", "--backend", file, "k", "--", "true"],
          env: { LOCKS_COMPILE_CACHE: "0" },
        },
      ],
      [
        "locks status --backend file:// k",
        { argv: [node, CLI, "status", "--backend", file, "k"], env },
      ],
      [
        "locks run --backend redis:// k -- true",
        { argv: [node, CLI, "run", "--backend", redisUrl, "k", "--", "true"], env },
      ],
      [
        "locks status --backend redis:// k",
        { argv: [node, CLI, "status", "--backend", redisUrl, "k"], env },
      ],
    ];
    const samples = await measureAll(
      dir,
      commands.map(([, command]) => command),
    );
    const rows = commands.map(([name], i): [string, Sample] => [name, samples[i]!]);
    const floor = rows[0]![1];
    const ratio = (value: number, base: number): string => `${(value / base).toFixed(2)}x`;
    const run = rows[2]![1];
    const table: BenchTable = {
      suite: "cli-startup",
      title: `locks start-up: one short-lived process (median of ${RUNS} runs each)`,
      columns: ["command", "wall ms", "vs node", "CPU ms", "vs node", "max RSS MiB", "vs node"],
      rows: rows.map(([name, s]) => [
        name,
        s.wallMs,
        ratio(s.wallMs, floor.wallMs),
        s.cpuMs,
        ratio(s.cpuMs, floor.cpuMs),
        s.rssMiB,
        ratio(s.rssMiB, floor.rssMiB),
      ]),
      notes: [
        `goal: locks run --backend file within 1.3x of node -e 0 wall: ${ratio(run.wallMs, floor.wallMs)} (${run.wallMs <= 1.3 * floor.wallMs ? "met" : "not met"})`,
        "CPU is user + system of the command and its children (getrusage via bash's times); RSS is GNU time's %M",
        "the CLI is the built bundle in packages/cli/dist; a free key (status exits 0)",
        "the code cache is the bundles' compiled code kept by an earlier run (packages/cli/src/compile-cache.ts); the first run of a build compiles as without it",
      ],
    };
    return [table];
  } finally {
    await Promise.allSettled(servers.map((s) => s.stop()));
    await rm(dir, { recursive: true, force: true });
  }
};

export default suite;
