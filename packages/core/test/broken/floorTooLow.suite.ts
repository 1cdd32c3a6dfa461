import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:floorTooLow",
  create: () => memoryBackend({ floorTooLow: true }),
  ttlMs: 300,
});
