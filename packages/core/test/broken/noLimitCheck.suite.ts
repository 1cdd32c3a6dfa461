import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:noLimitCheck",
  create: () => memoryBackend({ noLimitCheck: true }),
  ttlMs: 300,
});
