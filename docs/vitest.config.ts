import { defineProject } from "../vitest.shared.js";

export default defineProject({
  include: ["test/**/*.test.ts", "examples/*/test/**/*.test.ts"],
});
