import type { TestProject } from "vitest/node";
import "../provided.js";
import { etcdEndpointsFromEnv } from "../env.js";
import { startEtcd } from "../etcd.js";

/**
 * vitest globalSetup: provides `etcdEndpoints` (`inject("etcdEndpoints")`)
 * from `ETCD_ENDPOINTS` (comma-separated), or starts one etcd for the whole
 * run and stops it after the run, failed or not.
 */
export default async function setup(
  project: Pick<TestProject, "provide">,
): Promise<() => Promise<void>> {
  const fromEnv = etcdEndpointsFromEnv();
  if (fromEnv) {
    project.provide("etcdEndpoints", fromEnv);
    return async () => {};
  }
  const server = await startEtcd();
  project.provide("etcdEndpoints", [server.endpoint]);
  return () => server.stop();
}
