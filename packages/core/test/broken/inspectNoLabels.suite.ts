import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:inspectNoLabels",
  create: () => memoryBackend({ inspectNoLabels: true }),
  ttlMs: 300,
});
