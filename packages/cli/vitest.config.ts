import { defineProject } from "../../vitest.shared.js";

export default defineProject({
  // Every test starts `locks` processes (the bin built by test/bin-setup.ts) and
  // waits on what they print, each wait with its own deadline: on a loaded 2-core
  // machine running other packages' tests, a test can take well over the default
  // 30 s without anything being wrong.
  testTimeout: 120_000,
  globalSetup: [
    "./test/bin-setup.ts",
    "@locks/testkit/setup/redis",
    "@locks/testkit/setup/etcd",
    "@locks/testkit/setup/postgres",
    "@locks/testkit/setup/mariadb",
  ],
});
