import type { TestProject } from "vitest/node";
import "../provided.js";
import { databaseUrlFromEnv } from "../env.js";
import { startPostgres } from "../postgres.js";

/**
 * vitest globalSetup: provides `databaseUrl` (`inject("databaseUrl")`) from
 * `DATABASE_URL`, or starts one PostgreSQL for the whole run and stops it
 * after the run, failed or not.
 */
export default async function setup(
  project: Pick<TestProject, "provide">,
): Promise<() => Promise<void>> {
  const fromEnv = databaseUrlFromEnv();
  if (fromEnv) {
    project.provide("databaseUrl", fromEnv);
    return async () => {};
  }
  const server = await startPostgres();
  project.provide("databaseUrl", server.connectionString);
  return () => server.stop();
}
