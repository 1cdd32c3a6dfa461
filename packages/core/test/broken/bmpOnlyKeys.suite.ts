import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:bmpOnlyKeys",
  create: () => memoryBackend({ bmpOnlyKeys: true }),
  ttlMs: 300,
});
