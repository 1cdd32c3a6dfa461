import { describe, expect, it } from "vitest";
import { createLockManager, createLocks } from "../src/index.js";
import { memoryBackend } from "./memory-backend.js";
import { webLocksTests } from "./web-locks-wpt.js";

webLocksTests({ name: "memory", open: (options) => createLocks(memoryBackend(), options) });

describe("createLockManager", () => {
  it("refuses anything but a Locks client", () => {
    for (const bad of [undefined, null, {}, { acquire() {} }]) {
      expect(() => createLockManager(bad as never)).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT" }),
      );
    }
  });
});
