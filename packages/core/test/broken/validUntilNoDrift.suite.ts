import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:validUntilNoDrift",
  create: () => memoryBackend({ validUntilNoDrift: true }),
  ttlMs: 300,
});
