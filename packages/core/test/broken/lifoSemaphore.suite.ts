import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:lifoSemaphore",
  create: () => memoryBackend({ lifoSemaphore: true }),
  ttlMs: 300,
});
