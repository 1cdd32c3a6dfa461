import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:forceReleaseReusesToken",
  create: () => memoryBackend({ forceReleaseReusesToken: true }),
  ttlMs: 300,
});
