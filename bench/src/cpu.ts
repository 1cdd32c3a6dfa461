import { cpuSpent, processCpuUs } from "./harness.js";

/*
 * CPU time per cycle, the figure goals are judged on: wall-clock rates swing
 * with whatever else the machine runs, CPU per cycle (this process, plus the
 * server processes that work for it) hardly does. Summed over every round,
 * not the best one.
 */

/** One contender's CPU over all its rounds. */
export class CpuTally {
  cycles = 0;
  clientUs = 0;
  /** undefined once a round could not read a server's CPU (or there is no server to read). */
  serverUs: number | undefined;

  constructor(readonly serverPids: readonly number[] = []) {
    this.serverUs = serverPids.length > 0 ? 0 : undefined;
  }

  /** Client µs per cycle. */
  get client(): number {
    return this.clientUs / this.cycles;
  }

  /** Server µs per cycle, when every round could read it. */
  get server(): number | undefined {
    return this.serverUs === undefined ? undefined : this.serverUs / this.cycles;
  }

  /** Client + server µs per cycle. */
  get total(): number {
    return this.client + (this.server ?? 0);
  }
}

/**
 * Runs `body` (which returns the cycles it did) and adds its CPU time, this
 * process's and the servers', to `tally`. Resolves with cycles per second.
 */
export async function measured(body: () => Promise<number>, tally: CpuTally): Promise<number> {
  const serverBefore = tally.serverPids.map(processCpuUs);
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  const cycles = await body();
  const elapsed = performance.now() - start;
  const cpu = process.cpuUsage(cpuBefore);
  const server = cpuSpent(serverBefore, tally.serverPids.map(processCpuUs));
  tally.cycles += cycles;
  tally.clientUs += cpu.user + cpu.system;
  tally.serverUs =
    tally.serverUs === undefined || server === undefined ? undefined : tally.serverUs + server;
  return (cycles * 1000) / elapsed;
}

/** `fn` in batches for about `ms` (after a short warm-up), measured into `tally`: cycles per second. */
export async function cpuOpsPerSecond(
  fn: () => Promise<unknown>,
  ms: number,
  tally: CpuTally,
  batch = 100,
): Promise<number> {
  for (let i = 0; i < batch; i++) await fn(); // warm up
  return measured(async () => {
    let cycles = 0;
    const start = performance.now();
    while (performance.now() - start < ms) {
      for (let i = 0; i < batch; i++) await fn();
      cycles += batch;
    }
    return cycles;
  }, tally);
}

/** "client + server = total" µs per cycle, or the client's alone where there is no server to read. */
export function cpuCell(tally: CpuTally): string {
  const server = tally.server;
  return server === undefined
    ? tally.client.toFixed(1)
    : `${tally.client.toFixed(1)} + ${server.toFixed(1)} = ${tally.total.toFixed(1)}`;
}

/** This tally's CPU per cycle over the floor's, e.g. "1.32x". */
export function cpuRatio(tally: CpuTally, floor: CpuTally): string {
  return `${(tally.total / floor.total).toFixed(2)}x`;
}
