import type { TestProject } from "vitest/node";
import "../provided.js";
import { mysqlUrlFromEnv } from "../env.js";
import { startMariadb } from "../mariadb.js";

/**
 * vitest globalSetup: provides `mysqlUrl` (`inject("mysqlUrl")`) from
 * `MYSQL_URL`, or starts one MariaDB for the whole run and stops it after
 * the run, failed or not.
 */
export default async function setup(
  project: Pick<TestProject, "provide">,
): Promise<() => Promise<void>> {
  const fromEnv = mysqlUrlFromEnv();
  if (fromEnv) {
    project.provide("mysqlUrl", fromEnv);
    return async () => {};
  }
  const server = await startMariadb();
  project.provide("mysqlUrl", server.url);
  return () => server.stop();
}
