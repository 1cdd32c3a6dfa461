import type { HoldRecord } from "@locks/core/history";

/** How a client process reaches its backend (sent as JSON in CHAOS_CLIENT). */
export type BackendSpec =
  | { readonly kind: "file"; readonly directory: string }
  | { readonly kind: "redis"; readonly url: string }
  | { readonly kind: "redlock"; readonly urls: readonly string[] }
  | {
      readonly kind: "redis-cluster";
      readonly nodes: readonly { readonly host: string; readonly port: number }[];
    }
  | { readonly kind: "etcd"; readonly hosts: readonly string[] }
  | { readonly kind: "postgres"; readonly connectionString: string }
  | { readonly kind: "mysql"; readonly uri: string; readonly heartbeatMs: number };

/** Everything a client process needs, passed in its environment. */
export interface ClientConfig {
  readonly clientId: string;
  readonly backend: BackendSpec;
  readonly namespace: string;
  readonly key: string;
  readonly ttlMs: number;
  readonly acquireTimeoutMs: number;
  readonly fenceUrl: string;
  readonly fenceKey: string;
}

/** Outcome of one fenced write. */
export interface WriteOutcome {
  /** true: the store accepted the token; false: refused as stale; null: the write itself failed. */
  readonly accepted: boolean | null;
  /** When accepted: the store's acceptance sequence number (its order of accepting writes). */
  readonly order?: number;
  /** historyNow() when the store's answer arrived. */
  readonly ackAt: number;
  readonly error?: string;
}

/** Messages from a client to the parent. */
export type ClientMessage =
  | {
      readonly type: "ready";
      /** historyNow() and the system-wide monotonic clock (process.hrtime, ms), read together. */
      readonly now: number;
      readonly hr: number;
    }
  | { readonly type: "acquired"; readonly seq: number; readonly token: string; readonly at: number }
  | {
      readonly type: "hold";
      readonly seq: number;
      readonly record: HoldRecord;
      readonly write: WriteOutcome;
      /** When the lease signalled a loss: how long after its local deadline (ms, wall clock of the client). */
      readonly lostLateMs?: number;
    }
  | { readonly type: "acquire-failed"; readonly code: string; readonly message: string };

/** Messages from the parent to a client. */
export type ParentMessage =
  | { readonly type: "go"; readonly seq: number }
  | { readonly type: "stop" };
