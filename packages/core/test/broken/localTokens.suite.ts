import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:localTokens",
  create: () => memoryBackend({ localTokens: true }),
  ttlMs: 300,
});
