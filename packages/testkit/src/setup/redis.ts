import type { TestProject } from "vitest/node";
import "../provided.js";
import { redisUrlFromEnv } from "../env.js";
import { startRedis } from "../redis.js";

/**
 * vitest globalSetup: provides `redisUrl` (`inject("redisUrl")`) from
 * `REDIS_URL`, or starts one redis-server for the whole run and stops it
 * after the run, failed or not.
 */
export default async function setup(
  project: Pick<TestProject, "provide">,
): Promise<() => Promise<void>> {
  const fromEnv = redisUrlFromEnv();
  if (fromEnv) {
    project.provide("redisUrl", fromEnv);
    return async () => {};
  }
  const server = await startRedis();
  project.provide("redisUrl", server.url);
  return () => server.stop();
}
