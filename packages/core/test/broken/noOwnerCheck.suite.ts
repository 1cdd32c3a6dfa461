import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:noOwnerCheck",
  create: () => memoryBackend({ noOwnerCheck: true }),
  ttlMs: 300,
});
