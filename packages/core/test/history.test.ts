import { describe, expect, it } from "vitest";
import { assertHistory, checkHistory, type HoldRecord } from "../src/conformance/history.js";

function hold(
  owner: string,
  token: number,
  from: number,
  to: number,
  extra: Partial<HoldRecord> = {},
): HoldRecord {
  return {
    owner,
    key: "k",
    mode: "exclusive",
    limit: 1,
    token: String(token),
    acquiredAt: from,
    releasedAt: to,
    ...extra,
  };
}

describe("history checker", () => {
  it("accepts back-to-back exclusive holds with increasing tokens", () => {
    expect(checkHistory([hold("a", 1, 0, 10), hold("b", 2, 10, 20), hold("a", 3, 25, 30)])).toEqual(
      [],
    );
  });

  it("reports two overlapping exclusive holds, naming both", () => {
    const a = hold("a", 1, 0, 10);
    const b = hold("b", 2, 5, 20);
    const [violation] = checkHistory([a, b]);
    expect(violation?.kind).toBe("overlap");
    expect(violation?.holds).toEqual([a, b]);
    expect(() => assertHistory([a, b])).toThrow(/owner=a[\s\S]*owner=b/);
  });

  it("ends a hold at its loss, not at a later release", () => {
    const lost = hold("a", 1, 0, 50, { lostAt: 10 });
    expect(checkHistory([lost, hold("b", 2, 10, 20)])).toEqual([]);
  });

  it("treats a hold never released as lasting forever", () => {
    const open: HoldRecord = {
      owner: "a",
      key: "k",
      mode: "exclusive",
      limit: 1,
      token: "1",
      acquiredAt: 0,
    };
    expect(checkHistory([open, hold("b", 2, 100, 200)])).toHaveLength(1);
  });

  it("lets readers overlap readers but not writers", () => {
    const r1 = hold("r1", 1, 0, 10, { mode: "shared" });
    const r2 = hold("r2", 2, 5, 15, { mode: "shared" });
    expect(checkHistory([r1, r2])).toEqual([]);
    expect(checkHistory([r1, r2, hold("w", 3, 12, 20)])).toHaveLength(1);
  });

  it("allows `limit` semaphore holders at once, not one more", () => {
    const two = [hold("a", 1, 0, 10, { limit: 2 }), hold("b", 2, 1, 10, { limit: 2 })];
    expect(checkHistory(two)).toEqual([]);
    expect(checkHistory([...two, hold("c", 3, 2, 10, { limit: 2 })])[0]?.kind).toBe("overlap");
  });

  it("reports a token that did not increase after an earlier hold ended", () => {
    const [violation] = checkHistory([hold("a", 5, 0, 10), hold("b", 4, 11, 20)]);
    expect(violation?.kind).toBe("token-order");
    expect(checkHistory([hold("a", 5, 0, 10), hold("b", 4, 11, 20)], { fencing: false })).toEqual(
      [],
    );
  });

  it("keeps keys apart", () => {
    expect(checkHistory([hold("a", 1, 0, 10), hold("b", 1, 0, 10, { key: "other" })])).toEqual([]);
  });
});
