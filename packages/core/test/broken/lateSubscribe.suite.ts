import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:lateSubscribe",
  create: () => memoryBackend({ lateSubscribe: true }),
  ttlMs: 300,
});
