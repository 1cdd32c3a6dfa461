import { afterAll } from "vitest";
import { runConformanceSuite } from "../../src/conformance/index.js";
import { memoryBackend, stopLeakedTimers } from "../memory-backend.js";

runConformanceSuite({
  name: "broken:leakyTimer",
  create: () => memoryBackend({ leakyTimer: true }),
  ttlMs: 300,
});

// The leaked timers would otherwise keep this worker busy for 8 s after the last test.
afterAll(stopLeakedTimers);
