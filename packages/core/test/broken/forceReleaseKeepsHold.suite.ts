import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:forceReleaseKeepsHold",
  create: () => memoryBackend({ forceReleaseKeepsHold: true }),
  ttlMs: 300,
});
