import { defineProject } from "../vitest.shared.js";

// One scenario at a time: each one runs several client processes and servers of its own.
export default defineProject({ fileParallelism: false, testTimeout: 120_000 });
