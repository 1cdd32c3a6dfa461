import { createLocks } from "@locks/core";
import { inject } from "vitest";
import { webLocksTests } from "../../core/test/web-locks-wpt.js";
import { redisBackend } from "../src/index.js";

const url = inject("redisUrl");

// The W3C Web Locks cases (see the suite); each client opens its own connections, as another process would.
webLocksTests({
  name: "redis",
  open: (options) => createLocks(redisBackend({ url }), options),
  ttlMs: 600,
});
