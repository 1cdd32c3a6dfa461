import { describe, expect, it, vi } from "vitest";
import type { Capabilities } from "../backend.js";
import type { Leader } from "../election.js";
import type { Lease } from "../lease.js";
import { codeOf, Harness } from "./harness.js";
import { History } from "./history.js";
import type { Optional } from "./holders.js";
import type { ConformanceOptions } from "./options.js";

/**
 * Leader election built on the lease: one leader at a time, the term's token
 * increases with each new leader, `leader()` and `observe()` report who
 * leads (from any instance), and `lead` campaigns again after each term.
 */
export function electionTests(
  options: ConformanceOptions,
  capabilities: Capabilities,
  optional: Optional,
): void {
  const noInspect = !optional.inspect;

  describe("leader election (inspect)", () => {
    it.skipIf(noInspect)(
      "one candidate leads at a time; leader() names it with its term token",
      async () => {
        const h = new Harness(options);
        const [a, b, c] = await h.clients(3);
        const first = a!.election("leader", { holder: "replica-1" });
        const second = b!.election("leader", { holder: "replica-2" });
        expect(await c!.election("leader").leader()).toBeUndefined();
        const term = await first.campaign();
        expect(await c!.election("leader").leader()).toEqual({
          holder: "replica-1",
          fencingToken: term.fencingToken,
        });
        expect(await codeOf(second.campaign({ timeoutMs: 50 }))).toBe("LOCK_TIMEOUT");
        const next = second.campaign({ timeoutMs: 30_000 });
        await term.release(); // resign
        const nextTerm = await next;
        expect(await first.leader()).toEqual({
          holder: "replica-2",
          fencingToken: nextTerm.fencingToken,
        });
        if (capabilities.fencing) expect(nextTerm.fencingToken).toBeGreaterThan(term.fencingToken);
        await nextTerm.release();
        expect(await first.leader()).toBeUndefined();
      },
    );

    it.skipIf(noInspect)("observe() yields the leader now, then each change", async () => {
      const h = new Harness(options);
      const [a, b, c] = await h.clients(3);
      const stop = new AbortController();
      const seen: Array<Leader | undefined> = [];
      const observing = (async () => {
        for await (const leader of c!.election("observed").observe({ signal: stop.signal })) {
          seen.push(leader);
        }
      })();
      await vi.waitFor(() => expect(seen).toHaveLength(1), { timeout: 10_000, interval: 10 });
      const termA = await a!.election("observed", { holder: "a" }).campaign();
      await vi.waitFor(() => expect(seen).toHaveLength(2), { timeout: 10_000, interval: 10 });
      const campaignB = b!.election("observed", { holder: "b" }).campaign();
      await termA.release();
      const termB = await campaignB;
      await vi.waitFor(() => expect(seen.at(-1)?.holder).toBe("b"), {
        timeout: 10_000,
        interval: 10,
      });
      stop.abort();
      await observing; // ends, without an error, when its signal aborts
      expect(seen[0]).toBeUndefined();
      expect(seen[1]).toEqual({ holder: "a", fencingToken: termA.fencingToken });
      expect(seen.at(-1)).toEqual({ holder: "b", fencingToken: termB.fencingToken });
      // Only changes: never the same leader twice in a row.
      for (let i = 1; i < seen.length; i++) expect(seen[i]).not.toEqual(seen[i - 1]);
      await termB.release();
    });

    it.skipIf(noInspect)(
      "lead() runs fn on one client at a time, each term with a higher token, until its signal aborts",
      async () => {
        const h = new Harness(options);
        const clients = await h.clients(3);
        const history = new History();
        const stop = new AbortController();
        const terms: bigint[] = [];
        const leading = clients.map((locks, i) =>
          locks.lead(
            "led",
            async (term: Lease) => {
              const end = history.begin(term, `replica-${i}`, 1);
              terms.push(term.fencingToken);
              // A short term: hold across a few turns of the event loop, then resign.
              await new Promise((resolve) => setTimeout(resolve, 5));
              end();
            },
            { holder: `replica-${i}`, signal: stop.signal },
          ),
        );
        await vi.waitFor(() => expect(terms.length).toBeGreaterThanOrEqual(9), {
          timeout: 30_000,
          interval: 20,
        });
        stop.abort();
        await Promise.all(leading); // lead resolves once its signal aborts
        history.assertValid();
        if (capabilities.fencing) {
          for (let i = 1; i < terms.length; i++) expect(terms[i]!).toBeGreaterThan(terms[i - 1]!);
        }
        // A campaign the abort ended may have been granted by a store queue meanwhile: handed back.
        await vi.waitFor(
          async () => expect((await clients[0]!.inspect("led")).holders).toEqual([]),
          { timeout: 10_000, interval: 20 },
        );
      },
    );

    it.skipIf(noInspect)(
      "lead(): a leader's term ends when its own signal aborts, and another client takes over",
      async () => {
        const h = new Harness(options);
        const [a, b] = await h.clients(2);
        const stopA = new AbortController();
        const stopB = new AbortController();
        let aLeads!: () => void;
        const aStarted = new Promise<void>((resolve) => {
          aLeads = resolve;
        });
        let termSignalOfA: AbortSignal | undefined;
        const leadingA = a!.lead(
          "takeover",
          async (term) => {
            termSignalOfA = term.signal;
            aLeads();
            // Leads until its term ends.
            await new Promise((resolve) => term.signal.addEventListener("abort", resolve));
          },
          { holder: "a", signal: stopA.signal },
        );
        await aStarted;
        let bTerm: bigint | undefined;
        const leadingB = b!.lead(
          "takeover",
          async (term) => {
            bTerm = term.fencingToken;
            await new Promise((resolve) => term.signal.addEventListener("abort", resolve));
          },
          { holder: "b", signal: stopB.signal },
        );
        stopA.abort();
        await leadingA;
        expect(termSignalOfA?.aborted).toBe(true);
        await vi.waitFor(() => expect(bTerm).toBeDefined(), { timeout: 30_000, interval: 10 });
        expect((await a!.election("takeover").leader())?.holder).toBe("b");
        stopB.abort();
        await leadingB;
      },
    );

    it.skipIf(noInspect)(
      "lead() rejects with fn's error when fn throws while leading, and frees the key",
      async () => {
        const h = new Harness(options);
        const [a] = await h.clients(1);
        const boom = new Error("boom");
        await expect(
          a!.lead("fails", () => {
            throw boom;
          }),
        ).rejects.toBe(boom);
        expect((await a!.inspect("fails")).holders).toEqual([]);
      },
    );

    it("refuses bad election input with INVALID_ARGUMENT before any I/O", async () => {
      const h = new Harness(options);
      const { locks, calls } = await h.countedClient();
      const refusals: Array<[string, () => unknown]> = [
        ["key", () => locks.election("")],
        ["holder", () => locks.election("e", { holder: "" })],
        ["ttlMs", () => locks.election("e", { ttlMs: -1 })],
        ["options.mode", () => locks.election("e", { mode: "shared" } as never)],
        ["options.limit", () => locks.election("e").campaign({ limit: 2 } as never)],
        ["fn", () => locks.lead("e", "not a function" as never)],
        ["signal", () => locks.lead("e", () => {}, { signal: {} as AbortSignal })],
      ];
      for (const [name, attempt] of refusals) {
        const error = await (async () => attempt())().then(
          () => undefined,
          (e: unknown) => e as { code?: string; message?: string },
        );
        expect(error?.code, name).toBe("INVALID_ARGUMENT");
        expect(error?.message, name).toContain(name);
      }
      expect(calls()).toBe(0);
    });
  });
}
