import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:ignoresAbort",
  create: () => memoryBackend({ ignoresAbort: true }),
  ttlMs: 300,
});
