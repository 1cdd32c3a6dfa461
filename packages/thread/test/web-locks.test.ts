import { createLocks } from "@locks/core";
import { webLocksTests } from "../../core/test/web-locks-wpt.js";
import { createSharedLockTable, threadBackend } from "../src/index.js";

// The W3C Web Locks cases (see the suite) over each way the thread backend keeps its table.
webLocksTests({ name: "thread", open: (options) => createLocks(threadBackend(), options) });

webLocksTests({
  name: "thread ttl",
  open: (options) => createLocks(threadBackend({ ttl: true }), options),
});

const table = createSharedLockTable({ slots: 256 });
webLocksTests({
  name: "thread table",
  open: (options) => createLocks(threadBackend({ table }), options),
});
