import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:ttlNeverExpires",
  create: () => memoryBackend({ ttlNeverExpires: true }),
  ttlMs: 300,
});
