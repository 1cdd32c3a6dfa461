import { defineProject } from "../../vitest.shared.js";

// The files mostly wait on servers and TTLs: two at a time fit two cores.
export default defineProject({ globalSetup: ["@locks/testkit/setup/redis"], maxWorkers: 2 });
