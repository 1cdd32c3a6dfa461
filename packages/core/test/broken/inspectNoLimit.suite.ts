import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:inspectNoLimit",
  create: () => memoryBackend({ inspectNoLimit: true }),
  ttlMs: 300,
});
