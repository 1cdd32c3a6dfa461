/*
 * Handles that keep a Node process alive (timers, sockets, pipes, watchers).
 * A timer that was unref()'d cannot keep the process alive and is not counted.
 * No vitest import: the conformance child process uses this module too.
 */
import { createHook, executionAsyncId } from "node:async_hooks";

/** How many active resources of each type ("Timeout", "TCPSocketWrap", ...) the process has. */
export type ResourceCounts = Readonly<Record<string, number>>;

/** Counts this process's active resources by type (process.getActiveResourcesInfo). */
export function activeResources(): ResourceCounts {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

/** One entry per resource that `now` has beyond `baseline`, e.g. ["Timeout", "Timeout"]. */
export function grownSince(baseline: ResourceCounts, now: ResourceCounts): string[] {
  const grown: string[] = [];
  for (const [type, count] of Object.entries(now)) {
    for (let extra = count - (baseline[type] ?? 0); extra > 0; extra--) grown.push(type);
  }
  return grown.sort();
}

/**
 * For a process that does nothing else (the conformance child): waits until
 * it has no more active resources than `baseline` (a closed socket leaves the
 * list a moment after close() resolved), or `withinMs` passed; returns what
 * is still there beyond the baseline.
 */
export async function leftOver(baseline: ResourceCounts, withinMs: number): Promise<string[]> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    // Counted after the sleep's own timer fired, so it is not among them.
    const grown = grownSince(baseline, activeResources());
    if (grown.length === 0 || performance.now() >= deadline) return grown;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface Tracked {
  readonly type: string;
  readonly resource: { hasRef?: () => boolean };
}

/**
 * For a process where other work goes on (a test runner): records every
 * resource created while it runs, by identity, so that timers of earlier
 * work ending meanwhile cannot hide a new one, as comparing counts would.
 */
export class ResourceWatch {
  readonly #live = new Map<number, Tracked>();
  /** The watch's own sleep timers. */
  readonly #own = new Set<number>();
  readonly #hook = createHook({
    init: (asyncId, type, _trigger, resource) => {
      // Promises never keep a process alive, and there are many.
      if (type !== "PROMISE")
        this.#live.set(asyncId, { type, resource: resource as Tracked["resource"] });
    },
    destroy: (asyncId) => {
      this.#live.delete(asyncId);
    },
  });

  constructor() {
    this.#hook.enable();
  }

  /** The types of the resources created since the watch began that still keep the process alive. */
  holding(): string[] {
    const held: string[] = [];
    for (const [asyncId, { type, resource }] of this.#live) {
      if (this.#own.has(asyncId)) continue;
      if (typeof resource.hasRef === "function" && resource.hasRef()) held.push(type);
    }
    return held.sort();
  }

  /**
   * Waits until no resource created since the watch began keeps the process
   * alive, or `withinMs` passed; returns those that still do, and stops watching.
   */
  async leftOver(withinMs: number): Promise<string[]> {
    const deadline = performance.now() + withinMs;
    try {
      for (;;) {
        const held = this.holding();
        if (held.length === 0 || performance.now() >= deadline) return held;
        await new Promise<void>((resolve) =>
          setTimeout(() => {
            this.#own.add(executionAsyncId());
            resolve();
          }, 20),
        );
      }
    } finally {
      this.stop();
    }
  }

  stop(): void {
    this.#hook.disable();
    this.#live.clear();
  }
}
