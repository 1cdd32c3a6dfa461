import { describe, expect, it } from "vitest";
import { QueueLines } from "../../src/toolkit/index.js";

/** A connection as a backend sees it: free to hand on unless busy. */
interface Conn {
  name: string;
  busy: boolean;
}

function conn(name: string): Conn {
  return { name, busy: false };
}

function lines(): QueueLines<Conn> {
  return new QueueLines<Conn>((c) => !c.busy);
}

describe("QueueLines", () => {
  it("declines at once when no connection of the client waits for the key", async () => {
    const queue = lines();
    expect(queue.crowded("k")).toBe(false);
    await expect(queue.behind("k", new AbortController().signal)).resolves.toBeUndefined();
    queue.enter("other");
    await expect(queue.behind("k", new AbortController().signal)).resolves.toBeUndefined();
  });

  it("hands the connection of a wait that ends to the oldest in line, which then counts for the key", async () => {
    const queue = lines();
    const signal = new AbortController().signal;
    const a = conn("a");
    queue.enter("k");
    const first = queue.behind("k", signal);
    const second = queue.behind("k", signal);
    expect(queue.crowded("k")).toBe(true);
    expect(queue.leave("k", a)).toBe(true);
    await expect(first).resolves.toBe(a);
    expect(queue.crowded("k")).toBe(true);
    // The handed connection counts: its end hands it on again.
    expect(queue.leave("k", a)).toBe(true);
    await expect(second).resolves.toBe(a);
    expect(queue.crowded("k")).toBe(false);
    // The last connection leaves with nobody in line: the caller keeps it, and the key is forgotten.
    expect(queue.leave("k", a)).toBe(false);
    await expect(queue.behind("k", signal)).resolves.toBeUndefined();
  });

  it("keeps a connection that is not free, and declines the line when the key's last connection leaves", async () => {
    const queue = lines();
    const signal = new AbortController().signal;
    const busy = { ...conn("busy"), busy: true };
    queue.enter("k");
    queue.enter("k");
    const first = queue.behind("k", signal);
    const second = queue.behind("k", signal);
    expect(queue.leave("k", busy)).toBe(false);
    // One connection still waits for the key: the line waits too.
    expect(queue.crowded("k")).toBe(true);
    expect(queue.leave("k", undefined)).toBe(false);
    await expect(first).resolves.toBeUndefined();
    await expect(second).resolves.toBeUndefined();
    expect(queue.crowded("k")).toBe(false);
  });

  it("takes an aborted wait out of the line, so the next one gets the connection", async () => {
    const queue = lines();
    const a = conn("a");
    const aborted = new AbortController();
    queue.enter("k");
    const gone = queue.behind("k", aborted.signal);
    const next = queue.behind("k", new AbortController().signal);
    aborted.abort(new Error("given up"));
    await expect(gone).rejects.toThrow("given up");
    expect(queue.leave("k", a)).toBe(true);
    await expect(next).resolves.toBe(a);
  });

  it("hands a free idle connection to the oldest line that waits, and refuses a busy one", async () => {
    const queue = lines();
    const signal = new AbortController().signal;
    const idle = conn("idle");
    expect(queue.handAny(idle)).toBe(false);
    queue.enter("k");
    const waiting = queue.behind("k", signal);
    expect(queue.handAny({ ...conn("busy"), busy: true })).toBe(false);
    expect(queue.handAny(idle)).toBe(true);
    await expect(waiting).resolves.toBe(idle);
    // Two connections count for the key now: one leaving declines nobody.
    const later = queue.behind("k", signal);
    expect(queue.leave("k", undefined)).toBe(false);
    expect(queue.crowded("k")).toBe(true);
    expect(queue.leave("k", undefined)).toBe(false);
    await expect(later).resolves.toBeUndefined();
  });
});
