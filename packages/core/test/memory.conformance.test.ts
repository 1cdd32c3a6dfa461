import { runConformanceSuite } from "../src/conformance/index.js";
import { memoryBackend } from "./memory-backend.js";

// The reference backend: every capability, honoured. The suite must pass it.
runConformanceSuite({ name: "memory", create: () => memoryBackend(), ttlMs: 300 });
