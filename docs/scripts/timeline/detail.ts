import type { Timeline, TimelineFault, TimelineHold } from "../../../chaos/src/timeline.js";
import { seconds } from "./svg.js";

/*
 * The window of a run worth zooming into: a holder paused right after its
 * grant, its lease running out, another process taking the key with a higher
 * token, the paused holder resuming and its write being refused. Chosen from
 * the data; without such a pause, a holder killed and the key taken over.
 */

/** A zoomed window and what happened in it, in words. */
export interface Detail {
  readonly from: number;
  readonly to: number;
  /** The hold the story is about (the paused or killed holder's). */
  readonly hold: TimelineHold;
  readonly fault: TimelineFault;
  /** Plain text; the caller escapes it. */
  readonly caption: string;
  /** Moments worth a line of their own (the paused holder's lease running out). */
  readonly markers: readonly { readonly at: number; readonly text: string }[];
}

const ownerOf = (h: TimelineHold): string => `${h.process}#${h.seq}`;

/** The best pause-and-takeover of the run, else a kill-and-takeover, else undefined. */
export function pickDetail(timeline: Timeline, ttlMs: number): Detail | undefined {
  const heldAt = (f: TimelineFault): TimelineHold | undefined =>
    timeline.holds.find(
      (h) => h.process === f.process && h.from <= f.start && (h.to ?? timeline.end) >= f.start,
    );
  const pauses = timeline.faults
    .filter((f) => f.kind === "pause")
    .flatMap((fault) => {
      const hold = heldAt(fault);
      return hold === undefined ? [] : [{ fault, hold }];
    });
  // Best: the paused holder's write was refused after another process took the key.
  const ranked = [...pauses].sort((a, b) => score(b.hold) - score(a.hold));
  const best = ranked[0];
  if (best !== undefined && score(best.hold) > 0) return pauseDetail(timeline, best, ttlMs);

  for (const fault of timeline.faults.filter((f) => f.kind === "kill")) {
    const hold = heldAt(fault);
    const next = timeline.holds.find((h) => h.process !== fault.process && h.from >= fault.start);
    if (hold === undefined || next === undefined) continue;
    return killDetail(timeline, fault, hold, next);
  }
  return best === undefined ? undefined : pauseDetail(timeline, best, ttlMs);

  function score(h: TimelineHold): number {
    const taken = timeline.overlaps.some((o) => o.older === ownerOf(h));
    return (h.write === "refused" ? 2 : 0) + (taken ? 1 : 0);
  }
}

/** A margin around the story: a tenth of it, at least 40 ms. */
function padded(from: number, to: number): { from: number; to: number } {
  const pad = Math.max(40, (to - from) * 0.1);
  return { from: Math.max(0, from - pad), to: to + pad };
}

function pauseDetail(
  timeline: Timeline,
  { fault, hold }: { fault: TimelineFault; hold: TimelineHold },
  ttlMs: number,
): Detail {
  const owner = ownerOf(hold);
  const overlap = timeline.overlaps.find((o) => o.older === owner);
  const taker = timeline.holds.find((h) => `${h.process}#${h.seq}` === overlap?.newer);
  const end = Math.max(hold.to ?? timeline.end, hold.ack ?? 0, fault.end);
  const expiry = hold.from + ttlMs;
  // With a takeover, the window is its end: the lease running out, the new grant, the resume
  // and the refusal, a few hundred ms (the pause itself is a TTL long, and told in words).
  const window =
    taker === undefined
      ? padded(hold.from, end)
      : padded(Math.min(taker.from, expiry) - Math.max(150, end - taker.from), end);
  const p = hold.process;
  const sentences = [
    `${p} was granted token ${hold.token} at ${seconds(hold.from)} and stopped (SIGSTOP) before its write.`,
  ];
  if (taker !== undefined) {
    sentences.push(
      `Its lease (TTL ${ttlMs} ms) ran out and ${taker.process} was granted the key at ${seconds(taker.from)} with token ${taker.token}` +
        (taker.write === "accepted" ? ", and wrote." : "."),
    );
  } else {
    sentences.push("No other process took the key meanwhile.");
  }
  // The parent reads its clock after kill(SIGCONT) returns, so the client can be faster.
  const told =
    hold.end === "lost" && hold.to !== null
      ? `, lease.signal aborted within ${Math.max(1, Math.ceil(hold.to - fault.end))} ms`
      : "";
  const write =
    hold.write === "refused"
      ? `the fenced store refused its write with token ${hold.token}`
      : hold.write === "accepted"
        ? `its write with token ${hold.token} was accepted`
        : `its write ${hold.write === "failed" ? "failed" : "was never sent"}`;
  sentences.push(`${p} ran again at ${seconds(fault.end)} (SIGCONT)${told}, and ${write}.`);
  return {
    ...window,
    hold,
    fault,
    caption: sentences.join(" "),
    markers: [{ at: expiry, text: `TTL of token ${hold.token} ends` }],
  };
}

function killDetail(
  timeline: Timeline,
  fault: TimelineFault,
  hold: TimelineHold,
  next: TimelineHold,
): Detail {
  const gap = next.from - fault.start;
  const caption =
    `${hold.process} was granted token ${hold.token} at ${seconds(hold.from)} and killed (SIGKILL) ` +
    `at ${seconds(fault.start)}, before its write. The key was free again ${gap.toFixed(1)} ms later: ` +
    `${next.process} was granted it at ${seconds(next.from)} with token ${next.token}.`;
  return {
    ...padded(hold.from, Math.max(next.to ?? timeline.end, next.ack ?? 0)),
    hold,
    fault,
    caption,
    markers: [],
  };
}
