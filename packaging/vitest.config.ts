import { defineProject } from "../vitest.shared.js";

// Packing, linting and two `npm install`s take most of the run: one file, generous timeouts.
export default defineProject({
  globalSetup: [
    "@locks/testkit/setup/redis",
    "@locks/testkit/setup/etcd",
    "@locks/testkit/setup/postgres",
    "@locks/testkit/setup/mariadb",
  ],
  testTimeout: 120_000,
  hookTimeout: 180_000,
});
