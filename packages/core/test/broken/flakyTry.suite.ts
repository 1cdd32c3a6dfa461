import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:flakyTry",
  create: () => memoryBackend({ flakyTry: true }),
  ttlMs: 300,
});
