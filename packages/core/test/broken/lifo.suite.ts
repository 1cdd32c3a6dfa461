import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:lifo",
  create: () => memoryBackend({ lifo: true }),
  ttlMs: 300,
});
