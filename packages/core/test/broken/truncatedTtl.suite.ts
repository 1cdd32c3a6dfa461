import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:truncatedTtl",
  create: () => memoryBackend({ truncatedTtl: true }),
  ttlMs: 300,
});
