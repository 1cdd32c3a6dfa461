import { defineProject } from "../../../../vitest.shared.js";

// Run only by broken-backends.test.ts, in its own vitest process. The files mostly
// wait on timers, so all of them run at once.
export default defineProject({
  include: ["test/broken/*.suite.ts"],
  testTimeout: 5_000,
  maxWorkers: 20,
});
