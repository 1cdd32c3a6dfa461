import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:slowReplies",
  create: () => memoryBackend({ slowReplies: true }),
  ttlMs: 300,
});
