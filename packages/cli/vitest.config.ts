import { defineProject } from "../../vitest.shared.js";

export default defineProject({
  globalSetup: [
    "@locks/testkit/setup/redis",
    "@locks/testkit/setup/etcd",
    "@locks/testkit/setup/postgres",
  ],
});
