import { describe, expect, it } from "vitest";
import type { Capabilities } from "../backend.js";
import type { Lease } from "../lease.js";
import { Harness } from "./harness.js";
import type { ConformanceOptions } from "./options.js";

/** Hooks the probe instance offers beyond its manifest. */
export interface Hooks {
  /** `backend.inspect` exists. */
  readonly inspect: boolean;
}

async function refusal(
  attempt: () => Promise<Lease | null>,
): Promise<{ code?: string; message?: string } | undefined> {
  try {
    const lease = await attempt();
    await lease?.release();
    return undefined;
  } catch (error) {
    return error as { code?: string; message?: string };
  }
}

/**
 * One limit per key: a request whose `limit` differs from the holders' is
 * refused (like `consul lock -n`), and `inspect` tells a semaphore's limit
 * and each holder's real mode.
 */
export function limitTests(
  options: ConformanceOptions,
  capabilities: Capabilities,
  hooks: Hooks,
): void {
  describe("semaphore limits and inspect", () => {
    it.skipIf(!capabilities.semaphore)(
      "refuses a limit other than the one the key's holders use, naming `limit` (semaphore)",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const one = await a!.acquire("limits", { limit: 2, timeoutMs: 10_000 });
        const two = await b!.acquire("limits", { limit: 2, timeoutMs: 10_000 });
        const attempts: Array<[string, () => Promise<Lease | null>]> = [
          ["tryAcquire with limit 3", () => c!.tryAcquire("limits", { limit: 3 })],
          ["acquire with limit 3", () => c!.acquire("limits", { limit: 3, timeoutMs: 2_000 })],
          ["tryAcquire with limit 1", () => c!.tryAcquire("limits")],
          ["acquire with limit 1", () => c!.acquire("limits", { timeoutMs: 2_000 })],
        ];
        for (const [what, attempt] of attempts) {
          const error = await refusal(attempt);
          expect(error?.code, what).toBe("INVALID_ARGUMENT");
          expect(error?.message, what).toMatch(/limit/);
        }
        await Promise.all([one.release(), two.release()]);
        // Free again: any limit is accepted.
        const three = await c!.tryAcquire("limits", { limit: 3 });
        expect(three, "limit 3 once the key is free").not.toBeNull();
        await three!.release();
      },
    );

    it.skipIf(!capabilities.semaphore || !hooks.inspect)(
      "inspect reports a semaphore's limit and its holders as exclusive (semaphore, inspect)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const one = await a!.acquire("inspected", { limit: 2, timeoutMs: 10_000 });
        const two = await b!.acquire("inspected", { limit: 2, timeoutMs: 10_000 });
        const status = await a!.inspect("inspected");
        expect(status.holders.length).toBe(2);
        expect(status.limit).toBe(2);
        expect(status.holders.map((holder) => holder.mode)).toEqual(["exclusive", "exclusive"]);
        await Promise.all([one.release(), two.release()]);
      },
    );

    it.skipIf(!capabilities.shared || !hooks.inspect)(
      "inspect reports readers as shared (shared, inspect)",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const r1 = await a!.acquire("inspected-rw", { mode: "shared", timeoutMs: 10_000 });
        const r2 = await b!.acquire("inspected-rw", { mode: "shared", timeoutMs: 10_000 });
        const status = await a!.inspect("inspected-rw");
        expect(status.holders.length).toBe(2);
        expect(status.limit ?? 1).toBe(1);
        expect(status.holders.map((holder) => holder.mode)).toEqual(["shared", "shared"]);
        await Promise.all([r1.release(), r2.release()]);
      },
    );
  });
}
