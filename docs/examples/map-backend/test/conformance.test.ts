import { runConformanceSuite } from "@locks/core/conformance";
import { mapBackend } from "../src/index.js";

runConformanceSuite({
  name: "map",
  create: () => mapBackend(), // a fresh instance per call
  ttlMs: 300, // the short TTL of the expiry tests
});
