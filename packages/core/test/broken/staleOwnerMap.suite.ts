import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:staleOwnerMap",
  create: () => memoryBackend({ staleOwnerMap: true }),
  ttlMs: 300,
});
