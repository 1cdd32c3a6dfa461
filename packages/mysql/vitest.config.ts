import { defineProject } from "../../vitest.shared.js";

const config = defineProject({
  globalSetup: ["@locks/testkit/setup/mariadb"],
  // One file at a time: the fault tests (restarts, 4 child processes) would otherwise load the
  // 2 cores while the conformance suite times its waiters (fairness spaces them 60 ms apart).
  fileParallelism: false,
});

// vitest forwards ssr.resolve.conditions to Node as --conditions flags. With
// "import" among them, a CommonJS driver may resolve its dependencies to their ES
// module build (Node >= 20.19 can require ES modules), which can fail to load.
// Node adds "import" to ES module resolution by itself; keep it out of the flags.
const ssrResolve = config.ssr?.resolve;
if (ssrResolve?.conditions !== undefined) {
  ssrResolve.conditions = ssrResolve.conditions.filter((c) => c !== "import" && c !== "module");
}

export default config;
