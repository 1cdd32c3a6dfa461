import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:silent",
  create: () => memoryBackend({ silent: true }),
  ttlMs: 300,
});
