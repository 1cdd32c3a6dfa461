import type { Backend } from "../backend.js";

/** How the conformance suite makes and drives a backend. */
export interface ConformanceOptions {
  /** Shown in test names: "redis", "redlock", ... */
  readonly name: string;
  /**
   * Makes a FRESH backend instance (its own connections). The suite calls it
   * several times per test and contends between the instances.
   */
  readonly create: () => Backend | Promise<Backend>;
  /**
   * For `scope` "host" or "cluster": how to make the same backend in another
   * OS process. `module` is a file whose default export is a function like
   * `create`; it reads its configuration from `env`.
   */
  readonly process?: {
    readonly module: string;
    readonly env?: Readonly<Record<string, string>>;
    /** Node flags for the child, e.g. a TypeScript loader. Default: tsx when the suite runs from source. */
    readonly execArgv?: readonly string[];
  };
  /** Short TTL, in ms, for expiry tests (default 1000). Must be at least what the backend can honour. */
  readonly ttlMs?: number;
  /** Loops per contender in the contention test (default 25). */
  readonly iterations?: number;
}
