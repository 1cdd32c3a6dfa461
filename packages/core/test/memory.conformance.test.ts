import { runConformanceSuite } from "../src/conformance/index.js";
import { memoryBackend } from "./memory-backend.js";

// The reference backend: every capability, honoured. The suite must pass it.
runConformanceSuite({ name: "memory", create: () => memoryBackend(), ttlMs: 300 });

// The same without a queue of its own: waiters poll and are woken by subscribe, the core's
// other way of waiting.
runConformanceSuite({
  name: "memory polling",
  create: () => memoryBackend({}, { queue: false }),
  ttlMs: 300,
});
