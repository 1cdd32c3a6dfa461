import { runConformanceSuite } from "@locks/core/conformance";
import { mapBackend } from "../src/index.js";

runConformanceSuite({ name: "map", create: () => mapBackend(), ttlMs: 300 });
