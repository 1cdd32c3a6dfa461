/*
 * Timers a piece of the toolkit leaves behind, unref'd ones included
 * (process.getActiveResourcesInfo() does not list those): every Timeout
 * created while a watch runs, minus those that fired or were cleared, minus
 * the watch's own sleeps.
 */
import { createHook } from "node:async_hooks";

export class TimerWatch {
  readonly #live = new Set<number>();
  readonly #own = new Set<number>();
  readonly #hook = createHook({
    init: (asyncId, type) => {
      if (type === "Timeout") this.#live.add(asyncId);
    },
    destroy: (asyncId) => {
      this.#live.delete(asyncId);
    },
  });

  constructor() {
    this.#hook.enable();
  }

  /**
   * How many timers created since the watch began are still armed (not its
   * own sleeps). Node reports a cleared or fired timer's end a turn later,
   * so this lets the event loop turn twice first.
   */
  async armed(): Promise<number> {
    for (let turn = 0; turn < 2; turn++) await new Promise((resolve) => setImmediate(resolve));
    let armed = 0;
    for (const id of this.#live) if (!this.#own.has(id)) armed++;
    return armed;
  }

  /** A sleep the watch does not count. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#own.add(Number(timer));
    });
  }

  /** Waits until `condition()` holds, or fails after `ms`; its own polling is not counted. */
  async until(condition: () => boolean, ms = 5_000): Promise<void> {
    const deadline = performance.now() + ms;
    while (!condition()) {
      if (performance.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
      await this.sleep(2);
    }
  }

  stop(): void {
    this.#hook.disable();
  }
}
