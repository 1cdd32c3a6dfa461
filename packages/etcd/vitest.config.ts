import { defineProject } from "../../vitest.shared.js";

const config = defineProject({ globalSetup: ["@locks/testkit/setup/etcd"] });

// vitest 4 passes ssr.resolve.conditions to the test workers as `node --conditions`.
// With "import" among them, require() inside CommonJS packages loads ESM builds:
// protobufjs then gets `long`'s ESM namespace instead of the Long class, decodes
// int64 fields as doubles, and etcd lease ids lose precision ("lease not found").
// Keep the source condition, drop "import"/"module" for this package's workers.
config.ssr = {
  ...config.ssr,
  resolve: {
    ...config.ssr?.resolve,
    conditions: ["@locks/source", "node", "development|production"],
  },
};

export default config;
