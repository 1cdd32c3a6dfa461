import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { onAbort } from "../src/toolkit/index.js";

describe("onAbort", () => {
  it("puts one real listener on a signal however many waits share it", () => {
    const controller = new AbortController();
    const stops = Array.from({ length: 1_000 }, () => onAbort(controller.signal, () => {}));
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(1);
    for (const stop of stops) stop();
    expect(getEventListeners(controller.signal, "abort")).toHaveLength(0);
  });

  it("calls every live callback once with the reason, and none that stopped", () => {
    const controller = new AbortController();
    const seen: unknown[] = [];
    onAbort(controller.signal, (reason) => seen.push(["a", reason]));
    const stopB = onAbort(controller.signal, (reason) => seen.push(["b", reason]));
    stopB();
    controller.abort("why");
    controller.abort("again");
    expect(seen).toEqual([["a", "why"]]);
  });

  it("calls at once for a signal that already aborted", () => {
    let reason: unknown;
    onAbort(AbortSignal.abort("before"), (r) => {
      reason = r;
    });
    expect(reason).toBe("before");
  });
});
