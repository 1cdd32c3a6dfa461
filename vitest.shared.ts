import { defineConfig, type ViteUserConfig } from "vitest/config";

/**
 * Shared vitest settings: tests import the packages' TypeScript sources
 * through the "@locks/source" export condition, so no build step is needed.
 */
export function defineProject(overrides: ViteUserConfig["test"] = {}): ViteUserConfig {
  const conditions = ["@locks/source", "import", "module", "node", "default"];
  return defineConfig({
    resolve: { conditions },
    ssr: { resolve: { conditions, externalConditions: ["@locks/source"] } },
    test: {
      testTimeout: 30_000,
      hookTimeout: 60_000,
      teardownTimeout: 30_000,
      ...overrides,
    },
  });
}
