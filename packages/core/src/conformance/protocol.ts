import type { HoldRecord } from "./history.js";

/** Commands the suite sends to a backend running in another process. */
export type ChildCommand =
  | { readonly type: "contend"; readonly key: string; readonly loops: number }
  | { readonly type: "hold"; readonly key: string; readonly ttlMs: number }
  | { readonly type: "close" };

/** Replies from the child. */
export type ChildReply =
  | { readonly type: "ready" }
  | { readonly type: "holds"; readonly holds: HoldRecord[] }
  | { readonly type: "acquired"; readonly token: string }
  /**
   * After close(): the child's active resources (process.getActiveResourcesInfo)
   * beyond those it had before the backend was made, e.g. ["Timeout"].
   */
  | { readonly type: "closed"; readonly leftOver: string[] }
  | { readonly type: "error"; readonly message: string };

/** Environment variables the suite passes to the child. */
export const CHILD_ENV = {
  module: "LOCKS_CONFORMANCE_MODULE",
  namespace: "LOCKS_CONFORMANCE_NAMESPACE",
} as const;
