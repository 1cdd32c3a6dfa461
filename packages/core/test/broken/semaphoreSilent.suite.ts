import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:semaphoreSilent",
  create: () => memoryBackend({ semaphoreSilent: true }),
  ttlMs: 300,
});
