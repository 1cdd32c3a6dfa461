import { describe, expect, it } from "vitest";
import { type Wakeable, WakeRegistry } from "../../src/toolkit/index.js";

/** A waiter that records its wake-ups in `log`. */
function waiter(name: string, log: string[]): Wakeable & { name: string } {
  return { name, wake: () => log.push(name) };
}

describe("WakeRegistry", () => {
  it("keeps the waiters of a key in the order they came, and wakes only that key's", () => {
    const log: string[] = [];
    const registry = new WakeRegistry<Wakeable & { name: string }>();
    const [a, b, c] = ["a", "b", "c"].map((n) => waiter(n, log));
    registry.add("k", a!);
    registry.add("other", c!);
    registry.add("k", b!);
    expect(registry.waiters("k").map((w) => w.name)).toEqual(["a", "b"]);
    expect(registry.waiters("none")).toEqual([]);
    expect(registry.keys).toBe(2);
    registry.wake("k");
    expect(log).toEqual(["a", "b"]);
    registry.wake("none");
    expect(log).toEqual(["a", "b"]);
  });

  it("wakes the waiters `pick` chooses: the oldest one, for a fair hand-over", () => {
    const log: string[] = [];
    const registry = new WakeRegistry();
    for (const name of ["a", "b", "c"]) registry.add("k", waiter(name, log));
    registry.wake("k", (all) => all.slice(0, 1));
    expect(log).toEqual(["a"]);
  });

  it("calls `first` when a key gets its first waiter and `last` when it loses its last", () => {
    const hooks: string[] = [];
    const registry = new WakeRegistry({
      first: (key) => hooks.push(`first ${key}`),
      last: (key) => hooks.push(`last ${key}`),
    });
    const log: string[] = [];
    const removeA = registry.add("k", waiter("a", log));
    const removeB = registry.add("k", waiter("b", log));
    expect(hooks).toEqual(["first k"]);
    removeA();
    expect(hooks).toEqual(["first k"]);
    removeB();
    expect(hooks).toEqual(["first k", "last k"]);
    expect(registry.keys).toBe(0);
    // A key that gets a waiter again is subscribed again.
    registry.add("k", waiter("c", log))();
    expect(hooks).toEqual(["first k", "last k", "first k", "last k"]);
  });

  it("removes idempotently: a second removal changes nothing, not even another waiter's", () => {
    const hooks: string[] = [];
    const registry = new WakeRegistry({ last: (key) => hooks.push(`last ${key}`) });
    const log: string[] = [];
    const removeA = registry.add("k", waiter("a", log));
    removeA();
    removeA();
    expect(hooks).toEqual(["last k"]);
    const b = waiter("b", log);
    const removeB = registry.add("k", b);
    removeA();
    expect(registry.waiters("k")).toEqual([b]);
    removeB();
    removeB();
    expect(hooks).toEqual(["last k", "last k"]);
  });

  it("adds the same waiter to a key once, and to several keys", () => {
    const log: string[] = [];
    const registry = new WakeRegistry();
    const a = waiter("a", log);
    registry.add("k", a);
    registry.add("k", a);
    registry.add("j", a);
    registry.wake("k");
    expect(log).toEqual(["a"]);
    registry.wakeAll();
    expect(log).toEqual(["a", "a", "a"]);
  });

  it("wakeAll wakes every waiter of every key, even those that leave while it runs", () => {
    const log: string[] = [];
    const registry = new WakeRegistry();
    const removers: Array<() => void> = [];
    // Each waiter leaves when woken, as a wait that ends does.
    for (const [key, name] of [
      ["k", "a"],
      ["k", "b"],
      ["j", "c"],
    ] as const) {
      const remove = registry.add(key, {
        wake: () => {
          log.push(name);
          remove();
        },
      });
      removers.push(remove);
    }
    registry.wakeAll();
    expect(log.sort()).toEqual(["a", "b", "c"]);
    expect(registry.keys).toBe(0);
  });
});
