import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
// Relative, as examples/redis-backend's test: the testkit is the repository's private package.
import {
  databaseUrlFromEnv,
  redisUrlFromEnv,
  startPostgres,
  startRedis,
} from "../../packages/testkit/src/index.js";
import {
  collectSamples,
  docsRoot,
  type SampleServer,
  sampleSource,
  samplesDir,
} from "../scripts/samples.js";

/*
 * Samples marked ```ts run (getting started, fencing, the recipes) are
 * executed in a process of their own, exactly as a reader would run them; the
 * ```text output block after each is what it must print. A sample marked
 * `run postgres` or `run redis` gets a real server, started here through the
 * testkit once for the file (or DATABASE_URL / REDIS_URL when set), its URL
 * in the environment variable the sample reads. (Every sample is type-checked
 * by `pnpm --filter @locks/docs typecheck`.)
 */

const run = promisify(execFile);
const runnable = collectSamples().filter((s) => s.run);
// This run's own directory: a type-check running meanwhile must not delete the files.
mkdirSync(samplesDir, { recursive: true });
const dir = mkdtempSync(join(samplesDir, "run-"));

/** The environment variable each server's URL is passed in. */
const URL_VARIABLE: Record<SampleServer, string> = {
  postgres: "DATABASE_URL",
  redis: "REDIS_URL",
};

/** Servers started for this file, stopped after it. */
const stops: Array<() => Promise<void>> = [];
const urls = new Map<SampleServer, Promise<string>>();

/** The URL of a server of this kind: from the environment, or one started on first use. */
function serverUrl(server: SampleServer): Promise<string> {
  let url = urls.get(server);
  if (url === undefined) {
    url = (async () => {
      if (server === "postgres") {
        const fromEnv = databaseUrlFromEnv();
        if (fromEnv !== undefined) return fromEnv;
        const started = await startPostgres();
        stops.push(() => started.stop());
        return started.connectionString;
      }
      const fromEnv = redisUrlFromEnv();
      if (fromEnv !== undefined) return fromEnv;
      const started = await startRedis();
      stops.push(() => started.stop());
      return started.url;
    })();
    urls.set(server, url);
  }
  return url;
}

afterAll(async () => {
  await Promise.all(stops.map((stop) => stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe("runnable samples", () => {
  it("include the getting-started one and the recipes against real servers", () => {
    const pages = runnable.map((s) => s.page);
    expect(pages).toContain("guide/getting-started.md");
    expect(runnable.filter((s) => s.servers.includes("postgres")).length).toBeGreaterThan(0);
    expect(runnable.filter((s) => s.servers.includes("redis")).length).toBeGreaterThan(0);
  });

  it("refuse an unknown fence word and a server on a sample that does not run", () => {
    const page = join(dir, "words.md");
    writeFileSync(page, "```ts run postgress\nexport {};\n```\n");
    expect(() => collectSamples([page])).toThrow(/unknown word\(s\) after ```ts: postgress/);
    writeFileSync(page, "```ts redis\nexport {};\n```\n");
    expect(() => collectSamples([page])).toThrow(/"redis" names the server of a sample that runs/);
  });

  it.each(runnable.map((s) => [`${s.page}:${s.line}`, s] as const))(
    "%s runs",
    // The first sample that needs a server waits for its start (initdb, for postgres).
    { timeout: 90_000 },
    async (_, sample) => {
      const env: NodeJS.ProcessEnv = { ...process.env };
      for (const server of sample.servers) env[URL_VARIABLE[server]] = await serverUrl(server);
      const file = join(dir, sample.fileName);
      writeFileSync(file, sampleSource(sample));
      const { stdout } = await run(
        process.execPath,
        ["--conditions=@locks/source", "--import", "tsx", file],
        { cwd: docsRoot, env, timeout: 30_000 },
      ).catch((error: { message: string; stdout?: string; stderr?: string }) => {
        // What it printed before it failed or hung says where it stopped.
        throw new Error(`${error.message}\nstdout:\n${error.stdout}\nstderr:\n${error.stderr}`);
      });
      if (sample.output !== undefined) expect(stdout.trim()).toBe(sample.output.trim());
    },
  );
});
