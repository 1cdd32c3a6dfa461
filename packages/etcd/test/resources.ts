import { createHook } from "node:async_hooks";

/** Where a resource was made: the library code the tests hold to account. */
const OWNERS = [
  ["etcd backend", "/packages/etcd/src/"],
  ["core", "/packages/core/src/"],
  ["grpc-js", "@grpc/grpc-js"],
  ["etcd3", "/etcd3/lib/"],
] as const;

/** Timers and sockets: what keeps a process up or a server connected. */
const TYPES = new Set(["Timeout", "TCPWRAP"]);

export interface LiveResource {
  readonly type: string;
  readonly owner: string;
  readonly stack: string;
}

/**
 * Records every timer (setTimeout and setInterval alike, ref'd or not) and
 * socket that the backend, the core, grpc-js or etcd3 create from now on, and
 * forgets each one when it is cleared, fires for the last time or closes.
 * `process.getActiveResourcesInfo()` would miss unref'd timers and idle
 * sockets; async hooks see them all.
 */
export function trackResources(): { live(): LiveResource[]; stop(): void } {
  const live = new Map<number, LiveResource>();
  const hook = createHook({
    init(id, type) {
      if (!TYPES.has(type)) return;
      const stack = new Error().stack ?? "";
      const owner = OWNERS.find(([, path]) => stack.includes(path))?.[0];
      if (owner !== undefined) live.set(id, { type, owner, stack });
    },
    destroy(id) {
      live.delete(id);
    },
  });
  hook.enable();
  return {
    live: () => [...live.values()],
    stop: () => hook.disable(),
  };
}

/** A short description of live resources for an assertion message. */
export function describeResources(resources: readonly LiveResource[]): string {
  return resources
    .map((r) => `${r.type} from ${r.owner}:\n${r.stack.split("\n").slice(3, 9).join("\n")}`)
    .join("\n\n");
}
