import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { checkHistory, type HoldRecord } from "@locks/core/history";
import { nodeChildArgs, startRedis } from "@locks/testkit";
import { fenceState } from "./fence.js";
import { mulberry32, type Rng } from "./prng.js";
import type {
  BackendSpec,
  ClientConfig,
  ClientMessage,
  ParentMessage,
  WriteOutcome,
} from "./protocol.js";
import { type ScenarioSummary, stats, type Violation } from "./summary.js";
import {
  type HoldEnd,
  relativeMs,
  type Timeline,
  type TimelineOverlap,
  type WriteResult,
} from "./timeline.js";

const CLIENT = new URL("./client.ts", import.meta.url);

/** What a scenario's setup returns: the servers, how clients reach them, and the server faults. */
export interface Environment {
  /** Connection spec for client number `index` (several may go through different proxies). */
  spec(index: number): BackendSpec;
  /** Server-side faults by name; each resolves when the fault is healed again. */
  readonly faults: Record<string, (rng: Rng) => Promise<{ target: string; note?: string }>>;
  /** Clients started under libfaketime, by index, with the file their offset is read from. */
  readonly fakeClock?: ReadonlyMap<number, string>;
  /** Path of libfaketime.so.1 when fakeClock is used. */
  readonly libfaketime?: string;
  /** Faults after which the backend's documented limits allow overlaps and tokens going back. */
  readonly documentedAfter?: Record<string, string>;
  stop(): Promise<void>;
}

export interface ScenarioDefinition {
  readonly name: string;
  readonly backend: string;
  readonly description: string;
  readonly ttlMs: number;
  readonly clients: number;
  readonly acquireTimeoutMs: number;
  /** Faults the nemesis picks from: "pause" and "kill" (of the client that was just granted) plus the environment's. */
  readonly faultKinds: readonly string[];
  /** A fault injected first, so that even a short run covers it (then the nemesis picks). */
  readonly firstFault?: string;
  /** Share of the total run time this scenario gets. */
  readonly weight: number;
  setup(): Promise<Environment>;
}

interface Client {
  readonly id: string;
  /** When its process was started (the parent's clock). */
  readonly spawnedAt: number;
  readonly index: number;
  readonly child: ChildProcess;
  /** Added to this client's times to bring them to the parent's base (libfaketime offsets). */
  correction: number;
  lastSeen: number;
  paused: boolean;
  exited: boolean;
  ready: boolean;
  holding?: { seq: number; token: string; at: number };
  /** The pause fault it is in (its end is set at SIGCONT). */
  pausedBy?: FaultRecord;
  exitedAt?: number;
  /** When the parent SIGKILLed it. */
  killedAt?: number;
  stderr: string;
}

/** A fault as it is recorded during the run (parent's clock; a pause's end comes later). */
interface FaultRecord {
  readonly kind: string;
  readonly target: string;
  readonly process: string | null;
  readonly start: number;
  end: number | undefined;
  readonly note?: string;
}

type Armed = { kind: "pause" | "kill"; done: () => void };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The machine-wide monotonic clock in ms: every time in a scenario (clients' too) is on it. */
const hrNow = (): number => Number(process.hrtime.bigint()) / 1e6;

/** Runs one scenario: clients, nemesis, checker. Never throws for a failed check: see `passed`. */
export async function runScenario(
  def: ScenarioDefinition,
  options: { seed: number; durationMs: number; log?: (line: string) => void },
): Promise<ScenarioSummary> {
  const log = options.log ?? (() => undefined);
  const rng = mulberry32(options.seed);
  const fence = await startRedis();
  const env = await def.setup();
  const started = hrNow();
  const namespace = `chaos-${randomBytes(6).toString("hex")}`;
  const fenceKey = `fence:${namespace}`;

  const holds: HoldRecord[] = [];
  const writes = new Map<string, WriteOutcome>();
  const lostLate: number[] = [];
  const bases: number[] = [];
  const afterResume: number[] = [];
  const takeovers: number[] = [];
  /** Every grant reported (killed holders' too): when, its token, when its client started. */
  const grants: Grant[] = [];
  /** Each server fault: the first grant after it must beat every grant before it. */
  const serverFaults: ServerFault[] = [];
  const faultLog: FaultRecord[] = [];
  /** The documented faults, for the limit each overlap after them is allowed by. */
  const documentedFaults: { at: number; limit: string }[] = [];
  /** Holds whose process the nemesis killed while it held them. */
  const killedHolds = new Set<string>();
  /** Every client process ever started, in order. */
  const allClients: Client[] = [];
  const faultCounts: Record<string, number> = {};
  const violations: Violation[] = [];
  const documentedLimits = new Set<string>();
  const contAt = new Map<string, number>();
  let documentedFrom: number | undefined;
  let acquireTimeouts = 0;
  const errorSamples: Record<string, { count: number; example: string }> = {};
  let acquireErrors = 0;
  let lastAcked: { token: bigint; owner: string; at: number } | undefined;
  let pendingKill: { at: number; by: string } | undefined;
  let armed: Armed | undefined;
  let stopping = false;
  const clients = new Map<number, Client>();
  let generation = 0;

  /** Records a fault that started at `start` (parent's clock); `end` is undefined until it is known. */
  const fault = (
    kind: string,
    target: string,
    start: number,
    end: number | undefined,
    detail: { note?: string; process?: string } = {},
  ): FaultRecord => {
    faultCounts[kind] = (faultCounts[kind] ?? 0) + 1;
    const record: FaultRecord = {
      kind,
      target,
      process: detail.process ?? null,
      start,
      end,
      ...(detail.note === undefined ? {} : { note: detail.note }),
    };
    faultLog.push(record);
    const note = detail.note;
    log(`  [${Math.round(start - started)} ms] ${kind} ${target}${note ? ` (${note})` : ""}`);
    const documented = env.documentedAfter?.[kind];
    if (documented !== undefined) {
      documentedLimits.add(documented);
      documentedFaults.push({ at: start, limit: documented });
      // From the fault's start: a server killed loses its data then, not when it is back.
      documentedFrom ??= start;
    }
    return record;
  };

  const post = (client: Client, message: ParentMessage): void => {
    if (!client.exited && client.child.connected) client.child.send(message);
  };

  const spawnClient = (index: number): Client => {
    const id = `c${index}.${generation++}`;
    const config: ClientConfig = {
      clientId: id,
      backend: env.spec(index),
      namespace,
      key: "resource",
      ttlMs: def.ttlMs,
      acquireTimeoutMs: def.acquireTimeoutMs,
      fenceUrl: fence.url,
      fenceKey,
    };
    const childEnv = { ...process.env, CHAOS_CLIENT: JSON.stringify(config) };
    const clockFile = env.fakeClock?.get(index);
    const stdio: ["ignore", "ignore", "pipe", "ipc"] = ["ignore", "ignore", "pipe", "ipc"];
    const child = fork(CLIENT, [], {
      execArgv: nodeChildArgs,
      stdio,
      env:
        clockFile === undefined || env.libfaketime === undefined
          ? childEnv
          : {
              ...childEnv,
              // libfaketime preloaded into node itself (the faketime wrapper would stand between
              // the signals and node). Only the wall clock moves: CLOCK_MONOTONIC stays real
              // (libfaketime fakes it too by default). The offset is re-read once a second.
              LD_PRELOAD: env.libfaketime,
              FAKETIME_DONT_FAKE_MONOTONIC: "1",
              FAKETIME_TIMESTAMP_FILE: clockFile,
              FAKETIME_CACHE_DURATION: "1",
            },
    });
    const client: Client = {
      id,
      index,
      child,
      correction: 0,
      spawnedAt: hrNow(),
      lastSeen: hrNow(),
      paused: false,
      exited: false,
      ready: false,
      stderr: "",
    };
    child.stderr?.on("data", (chunk: Buffer) => {
      client.stderr = (client.stderr + chunk.toString()).slice(-2000);
    });
    child.on("exit", () => {
      client.exited = true;
      client.exitedAt = hrNow();
    });
    child.on("message", (message: ClientMessage) => onMessage(client, message));
    clients.set(index, client);
    allClients.push(client);
    return client;
  };

  const onMessage = (client: Client, message: ClientMessage): void => {
    client.lastSeen = hrNow();
    const c = client.correction;
    switch (message.type) {
      case "ready": {
        // hrNow() is performance.timeOrigin + performance.now(), and timeOrigin is sampled
        // from the wall clock at process start: processes disagree by milliseconds when one was
        // descheduled while starting (and by the whole offset under libfaketime). CLOCK_MONOTONIC
        // (process.hrtime) is one clock for the whole machine: every time is mapped onto it.
        client.correction = message.hr - message.now;
        if (env.fakeClock?.has(client.index) !== true) bases.push(message.now - message.hr);
        client.ready = true;
        return;
      }
      case "acquire-failed":
        if (message.code === "LOCK_TIMEOUT") acquireTimeouts++;
        else {
          acquireErrors++;
          const seen = errorSamples[message.code];
          if (seen === undefined)
            errorSamples[message.code] = { count: 1, example: message.message.slice(0, 300) };
          else seen.count++;
        }
        return;
      case "acquired": {
        const at = message.at + c;
        client.holding = { seq: message.seq, token: message.token, at };
        grants.push({ at, token: BigInt(message.token), spawnedAt: client.spawnedAt });
        if (pendingKill !== undefined && pendingKill.by !== client.id) {
          takeovers.push(at - pendingKill.at);
          pendingKill = undefined;
        }
        const trigger = armed;
        if (trigger === undefined || stopping) {
          post(client, { type: "go", seq: message.seq });
          return;
        }
        armed = undefined;
        if (trigger.kind === "pause") void pauseHolder(client, message.seq, message.token, trigger);
        else killHolder(client, message.seq, message.token, at, trigger);
        return;
      }
      case "hold": {
        const r = message.record;
        const record: HoldRecord = {
          ...r,
          acquiredAt: r.acquiredAt + c,
          ...(r.releasedAt === undefined ? {} : { releasedAt: r.releasedAt + c }),
          ...(r.lostAt === undefined ? {} : { lostAt: r.lostAt + c }),
        };
        holds.push(record);
        const write = { ...message.write, ackAt: message.write.ackAt + c };
        writes.set(record.owner, write);
        // A client whose wall clock was jumped by libfaketime measures lateness across the jump: left out.
        if (message.lostLateMs !== undefined && Math.abs(message.lostLateMs) < 60_000)
          lostLate.push(message.lostLateMs);
        const resumed = contAt.get(record.owner);
        if (resumed !== undefined && record.lostAt !== undefined)
          afterResume.push(record.lostAt - resumed);
        if (write.accepted === true) {
          const token = BigInt(record.token);
          if (lastAcked === undefined || token > lastAcked.token)
            lastAcked = { token, owner: record.owner, at: write.ackAt };
        }
        client.holding = undefined;
        return;
      }
    }
  };

  const pauseHolder = async (
    client: Client,
    seq: number,
    token: string,
    trigger: Armed,
  ): Promise<void> => {
    client.child.kill("SIGSTOP");
    const pausedAt = hrNow();
    client.paused = true;
    client.pausedBy = fault("pause", client.id, pausedAt, undefined, {
      note: `holder of token ${token}`,
      process: client.id,
    });
    post(client, { type: "go", seq });
    // Resume once another client was granted the key and finished its write (the lease surely
    // expired and was taken over), or after 3 TTLs + 1 s when nobody could take it.
    const deadline = pausedAt + def.ttlMs * 3 + 1_000;
    const takenOver = (): boolean =>
      holds.some((h) => h.acquiredAt > pausedAt && !h.owner.startsWith(`${client.id}#`));
    while (hrNow() < deadline && !takenOver()) await sleep(20);
    if (!client.paused) return; // the run ended meanwhile and resumed it
    contAt.set(`${client.id}#${seq}`, hrNow());
    client.child.kill("SIGCONT");
    resumed(client);
    client.lastSeen = hrNow();
    trigger.done();
  };

  const killHolder = (
    client: Client,
    seq: number,
    token: string,
    at: number,
    trigger: Armed,
  ): void => {
    client.child.kill("SIGKILL");
    const killAt = hrNow();
    client.killedAt = killAt;
    fault("kill", client.id, killAt, killAt, {
      note: `holder of token ${token}`,
      process: client.id,
    });
    // It never wrote (it was waiting for "go"); its hold ended when it died.
    client.holding = undefined;
    killedHolds.add(`${client.id}#${seq}`);
    holds.push({
      owner: `${client.id}#${seq}`,
      key: "resource",
      mode: "exclusive",
      limit: 1,
      token,
      acquiredAt: at,
      lostAt: killAt,
    });
    pendingKill = { at: killAt, by: client.id };
    spawnClient(client.index);
    trigger.done();
  };

  const hangWatch = setInterval(() => {
    const limit = def.acquireTimeoutMs + 10_000;
    for (const client of clients.values()) {
      if (client.paused || client.exited || stopping) continue;
      if (hrNow() - client.lastSeen > limit) {
        violations.push({
          kind: "hang",
          message: `client ${client.id} sent nothing for ${limit} ms (acquire timeout ${def.acquireTimeoutMs} ms); stderr: ${client.stderr}`,
          holds: [],
        });
        client.child.kill("SIGKILL");
        client.killedAt = hrNow();
        spawnClient(client.index);
      }
    }
  }, 500);

  /** After SIGCONT: the client runs again, and its pause fault ends now. */
  const resumed = (client: Client): void => {
    const at = hrNow();
    client.paused = false;
    client.lastSeen = at;
    if (client.pausedBy !== undefined) client.pausedBy.end = at;
    client.pausedBy = undefined;
  };

  try {
    for (let i = 0; i < def.clients; i++) spawnClient(i);
    await waitUntil(() => [...clients.values()].every((c) => c.ready), 30_000);
    log(`${def.name}: seed ${options.seed}, ${def.clients} clients, ${options.durationMs} ms`);

    // Nemesis: one fault at a time, picked by the seeded PRNG.
    const end = hrNow() + options.durationMs;
    let first = def.firstFault;
    while (hrNow() < end) {
      await sleep(rng.int(200, 800));
      if (hrNow() >= end) break;
      const kind = first ?? rng.pick(def.faultKinds);
      first = undefined;
      if (kind === "pause" || kind === "kill") {
        const fired = new Promise<void>((resolve) => {
          armed = { kind, done: resolve };
        });
        const gaveUp = sleep(def.acquireTimeoutMs).then(() => "timeout" as const);
        if ((await Promise.race([fired, gaveUp])) === "timeout") armed = undefined;
        else await fired;
        continue;
      }
      const action = env.faults[kind];
      if (action === undefined) throw new Error(`unknown fault ${kind}`);
      const began = hrNow();
      const { target, note } = await action(rng);
      const healedAt = hrNow();
      serverFaults.push({ kind, at: began, healedAt });
      // A fault on one client ("client c2": its clock; "link of client c1": its connection).
      const slot = /\bclient c(\d+)$/.exec(target)?.[1];
      const hit = slot === undefined ? undefined : clients.get(Number(slot));
      fault(kind, target, began, healedAt, {
        note: `${note ?? ""}${note ? ", " : ""}healed after ${Math.round(healedAt - began)} ms`,
        ...(hit === undefined ? {} : { process: hit.id }),
      });
    }
  } finally {
    stopping = true;
    armed = undefined;
    clearInterval(hangWatch);
    for (const client of clients.values()) {
      if (client.paused) {
        client.child.kill("SIGCONT");
        resumed(client);
      }
      post(client, { type: "stop" });
    }
    const exitBy = hrNow() + def.acquireTimeoutMs + 10_000;
    await waitUntil(() => [...clients.values()].every((c) => c.exited), exitBy - hrNow()).catch(
      () => undefined,
    );
    for (const client of clients.values()) {
      if (!client.exited) {
        violations.push({
          kind: "hang",
          message: `client ${client.id} did not exit after stop; stderr: ${client.stderr}`,
          holds: [],
        });
        client.child.kill("SIGKILL");
        client.killedAt = hrNow();
      }
    }
  }
  const endedAt = hrNow();

  const final = await fenceState(fence.url, fenceKey);
  await env.stop().catch((e: unknown) => log(`stop failed: ${String(e)}`));
  await fence.stop();

  // Checker.
  let fencedRefused = 0;
  let landedFirst = 0;
  let documented = 0;
  const overlapsAndOrder = checkHistory(holds);
  const inDocumentedWindow = (hold: HoldRecord): boolean =>
    documentedFrom !== undefined && hold.acquiredAt >= documentedFrom - def.ttlMs;
  /** The limit of the last documented fault that began before `at` (plus a TTL), else the first. */
  const limitBefore = (at: number): string => {
    const before = documentedFaults.filter((f) => f.at - def.ttlMs <= at).at(-1);
    return (before ?? documentedFaults[0])?.limit ?? "";
  };
  let overlapsTotal = 0;
  let tokenRegressions = 0;
  const overlaps: TimelineOverlap[] = [];
  for (const v of overlapsAndOrder) {
    const [older, newer] = v.holds as [HoldRecord, HoldRecord];
    if (v.kind === "overlap") {
      overlapsTotal++;
      const seen = {
        older: older.owner,
        newer: newer.owner,
        from: relativeMs(newer.acquiredAt, started),
        to: relativeMs(Math.min(holdEnd(older, endedAt), holdEnd(newer, endedAt)), started),
      };
      const w = writes.get(older.owner);
      const newerWrite = writes.get(newer.owner);
      const olderToken = BigInt(older.token);
      const told = older.lostAt !== undefined;
      if (told && olderToken < BigInt(newer.token) && (w === undefined || w.accepted !== true)) {
        fencedRefused++;
        overlaps.push({ verdict: "stale-refused", ...seen });
        continue;
      }
      if (
        told &&
        olderToken < BigInt(newer.token) &&
        w?.accepted === true &&
        (newerWrite?.accepted !== true || (w.order ?? 0) < (newerWrite.order ?? 0))
      ) {
        landedFirst++;
        overlaps.push({ verdict: "landed-first", ...seen });
        continue;
      }
      if (inDocumentedWindow(newer)) {
        documented++;
        overlaps.push({ verdict: "documented", ...seen, limit: limitBefore(newer.acquiredAt) });
        continue;
      }
      overlaps.push({ verdict: "violation", ...seen });
      violations.push({
        kind: "overlap",
        message: `${v.message}: the older holder ${told ? "was told" : "was NOT told (lease.signal never aborted)"}; its write ${describeWrite(w)}`,
        holds: v.holds,
      });
    } else {
      const w = writes.get(newer.owner);
      if (inDocumentedWindow(newer)) {
        tokenRegressions++;
        continue;
      }
      violations.push({
        kind: v.kind,
        message: `${v.message}; its write ${describeWrite(w)}`,
        holds: v.holds,
      });
    }
  }
  const tokensAfterFaults = tokensAfter(serverFaults, grants);
  for (const [kind, counts] of Object.entries(tokensAfterFaults)) {
    if (counts.notHigher > 0 && env.documentedAfter?.[kind] === undefined)
      violations.push({
        kind: "token-after-fault",
        message: `after ${counts.notHigher} of ${counts.faults} ${kind} fault(s) the first grant's token was not above every token granted before`,
        holds: [],
      });
    if (counts.onlyNewClients > 0)
      violations.push({
        kind: "no-recovery",
        message: `after ${counts.onlyNewClients} of ${counts.faults} ${kind} fault(s) only clients started after it were granted: the clients that lived through it never recovered`,
        holds: [],
      });
  }
  // The fenced store itself: accepted writes carry strictly increasing tokens in the order the
  // store accepted them (what makes a token that went back harmless).
  const acked = holds
    .flatMap((h) => {
      const w = writes.get(h.owner);
      return w?.accepted === true ? [{ hold: h, at: w.order ?? 0 }] : [];
    })
    .sort((a, b) => a.at - b.at);
  for (let i = 1; i < acked.length; i++) {
    const prev = acked[i - 1];
    const cur = acked[i];
    if (
      prev !== undefined &&
      cur !== undefined &&
      BigInt(cur.hold.token) <= BigInt(prev.hold.token)
    )
      violations.push({
        kind: "fence-order",
        message: `the fenced store accepted token ${cur.hold.token} after ${prev.hold.token}`,
        holds: [prev.hold, cur.hold],
      });
  }
  const expected = lastAcked === undefined ? null : `${lastAcked.token}=${lastAcked.owner}`;
  const found = final.token === null ? null : `${final.token}=${final.value}`;
  if (expected !== found)
    violations.push({
      kind: "lost-write",
      message: `the fenced store holds ${found ?? "nothing"}, the last acknowledged write was ${expected ?? "none"}`,
      holds: [],
    });
  if (holds.length === 0)
    violations.push({ kind: "no-progress", message: "no hold was recorded at all", holds: [] });

  let accepted = 0;
  let refused = 0;
  let failed = 0;
  for (const w of writes.values()) {
    if (w.accepted === true) accepted++;
    else if (w.accepted === false) refused++;
    else failed++;
  }
  const summary: ScenarioSummary = {
    name: def.name,
    backend: def.backend,
    description: def.description,
    seed: options.seed,
    durationMs: options.durationMs,
    clients: def.clients,
    ttlMs: def.ttlMs,
    holds: holds.length,
    acquireTimeouts,
    acquireErrors,
    acquireErrorsByCode: errorSamples,
    faults: faultCounts,
    overlaps: { total: overlapsTotal, staleRefused: fencedRefused, landedFirst, documented },
    tokenRegressions,
    tokensAfterFaults,
    writes: { accepted, refusedStale: refused, failed },
    lostLeases: {
      count: holds.filter((h) => h.lostAt !== undefined).length,
      lateMs: stats(lostLate),
      afterResumeMs: stats(afterResume),
    },
    takeoverAfterKillMs: stats(takeovers),
    timeOriginSkewMs: stats(bases.map((b) => b - Math.min(...bases))),
    finalWrite: { expected, found },
    violations,
    documentedLimits: [...documentedLimits],
    schedule: faultLog.map((f) => ({
      at: relativeMs(f.start, started),
      end: relativeMs(f.end ?? endedAt, started),
      kind: f.kind,
      target: f.target,
      ...(f.note === undefined ? {} : { note: f.note }),
    })),
    passed: violations.length === 0,
    timeline: buildTimeline({
      started,
      endedAt,
      clients: allClients,
      holds,
      writes,
      killedHolds,
      faults: faultLog,
      overlaps,
    }),
  };
  if (process.env.CHAOS_DEBUG_HOLDS)
    await import("node:fs/promises").then((fs) =>
      fs.writeFile(
        `${process.env.CHAOS_DEBUG_HOLDS}/${def.name}.holds.json`,
        JSON.stringify({ holds, writes: [...writes] }, null, 1),
      ),
    );
  return summary;
}

/** End of a recorded hold, as the checker takes it; an unfinished one lasts until the run ended. */
function holdEnd(hold: HoldRecord, endedAt: number): number {
  return Math.min(hold.releasedAt ?? endedAt, hold.lostAt ?? endedAt);
}

/** The run's history on the scenario's time base (see timeline.ts). */
function buildTimeline(run: {
  readonly started: number;
  readonly endedAt: number;
  readonly clients: readonly Client[];
  readonly holds: readonly HoldRecord[];
  readonly writes: ReadonlyMap<string, WriteOutcome>;
  readonly killedHolds: ReadonlySet<string>;
  readonly faults: readonly FaultRecord[];
  readonly overlaps: readonly TimelineOverlap[];
}): Timeline {
  const ms = (at: number): number => relativeMs(at, run.started);
  const orNull = (at: number | undefined): number | null => (at === undefined ? null : ms(at));
  const ownerParts = (owner: string): { process: string; seq: number } => {
    const hash = owner.lastIndexOf("#");
    return { process: owner.slice(0, hash), seq: Number(owner.slice(hash + 1)) };
  };
  const recorded = run.holds.map((h) => {
    const w = run.writes.get(h.owner);
    const end: HoldEnd = run.killedHolds.has(h.owner)
      ? "killed"
      : h.lostAt !== undefined
        ? "lost"
        : "released";
    const write: WriteResult =
      w === undefined
        ? "none"
        : w.accepted === true
          ? "accepted"
          : w.accepted === false
            ? "refused"
            : "failed";
    return {
      ...ownerParts(h.owner),
      token: h.token,
      from: ms(h.acquiredAt),
      to: ms(holdEnd(h, run.endedAt)),
      end,
      write,
      ack: w === undefined ? null : ms(w.ackAt),
    };
  });
  // Grants whose end never came: the process hung or was killed by the hang watch.
  const open = run.clients.flatMap((c) =>
    c.holding === undefined
      ? []
      : [
          {
            process: c.id,
            seq: c.holding.seq,
            token: c.holding.token,
            from: ms(c.holding.at),
            to: null,
            end: "open" as const,
            write: "none" as const,
            ack: null,
          },
        ],
  );
  return {
    end: ms(run.endedAt),
    processes: run.clients.map((c) => ({
      id: c.id,
      slot: c.index,
      spawned: ms(c.spawnedAt),
      exited: orNull(c.exitedAt),
      killed: orNull(c.killedAt),
    })),
    holds: [...recorded, ...open].sort((a, b) => a.from - b.from),
    faults: run.faults.map((f) => ({
      kind: f.kind,
      target: f.target,
      process: f.process,
      start: ms(f.start),
      end: ms(f.end ?? run.endedAt),
      ...(f.note === undefined ? {} : { note: f.note }),
    })),
    overlaps: [...run.overlaps].sort((a, b) => a.from - b.from),
  };
}

interface Grant {
  readonly at: number;
  readonly token: bigint;
  readonly spawnedAt: number;
}

interface ServerFault {
  readonly kind: string;
  readonly at: number;
  readonly healedAt: number;
}

type FaultTokens = { -readonly [k in keyof ScenarioSummary["tokensAfterFaults"][string]]: number };

/**
 * Per server fault kind: after how many faults the first grant that followed
 * had a token above every token granted before the fault began (`higher`) or
 * not (`notHigher`: the store lost its counter), and after how many, once
 * healed, a client that lived through the fault was granted again
 * (`resumed`) or only clients started later were (`onlyNewClients`). Faults
 * no grant followed count in none of them.
 */
function tokensAfter(
  faults: readonly ServerFault[],
  grants: readonly Grant[],
): Record<string, FaultTokens> {
  const result: Record<string, FaultTokens> = {};
  for (const fault of faults) {
    const counts = result[fault.kind] ?? {
      faults: 0,
      higher: 0,
      notHigher: 0,
      resumed: 0,
      onlyNewClients: 0,
    };
    result[fault.kind] = counts;
    counts.faults++;
    let before: bigint | undefined;
    let first: Grant | undefined;
    for (const grant of grants) {
      if (grant.at < fault.at) {
        if (before === undefined || grant.token > before) before = grant.token;
      } else if (first === undefined || grant.at < first.at) first = grant;
    }
    if (first === undefined) continue;
    if (before === undefined || first.token > before) counts.higher++;
    else counts.notHigher++;
    const later = grants.filter((g) => g.at > fault.healedAt);
    if (later.some((g) => g.spawnedAt < fault.at)) counts.resumed++;
    else if (later.length > 0) counts.onlyNewClients++;
  }
  return result;
}

function describeWrite(w: WriteOutcome | undefined): string {
  if (w === undefined) return "was never sent";
  if (w.accepted === true) return `was ACCEPTED at ${w.ackAt.toFixed(3)} (store order ${w.order})`;
  if (w.accepted === false) return "was refused";
  return `failed (${w.error ?? "?"})`;
}

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = hrNow() + timeoutMs;
  while (!check()) {
    if (hrNow() > deadline) throw new Error("timed out");
    await sleep(25);
  }
}

/** A failure report: seed, schedule, offending holds. */
export function failureReport(s: ScenarioSummary): string {
  const lines = [
    `chaos scenario ${s.name} FAILED (replay: pnpm test:chaos --seed ${s.seed} --duration ${s.durationMs / 1000} --only ${s.name})`,
    "fault schedule:",
    ...s.schedule.map(
      (f) => `  ${f.at}..${f.end} ms ${f.kind} ${f.target}${f.note ? ` (${f.note})` : ""}`,
    ),
    "violations:",
  ];
  // The holds again as the timeline has them: ms since the scenario started, as the schedule is.
  const onTimeline = new Map(s.timeline.holds.map((h) => [`${h.process}#${h.seq}`, h]));
  for (const v of s.violations.slice(0, 10)) {
    lines.push(`  ${v.kind}: ${v.message}`);
    for (const h of v.holds) {
      lines.push(`    ${JSON.stringify(h)}`);
      const relative = onTimeline.get(h.owner);
      if (relative !== undefined) lines.push(`      on the timeline: ${JSON.stringify(relative)}`);
    }
  }
  return lines.join("\n");
}
