import { defineProject } from "../../vitest.shared.js";

export default defineProject({ globalSetup: ["@locks/testkit/setup/redis"] });
