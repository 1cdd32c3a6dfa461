import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { httpRequest } from "./probe.js";
import { ManagedServer, retryOnAddressInUse, type ServerProcess } from "./process.js";
import { makeTempDir, removeDir } from "./registry.js";
import { freePort, requireBinary, sleep } from "./util.js";

/** An etcd member listening on 127.0.0.1 only. */
export interface EtcdServer extends ServerProcess {
  /** `http://127.0.0.1:<client port>` */
  readonly endpoint: string;
  /** The member name (unique per start call). */
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** The private temporary directory (data dir `data`, log `etcd.log`). */
  readonly dir: string;
}

export interface EtcdOptions {
  /** Extra etcd arguments, e.g. `["--auto-compaction-retention", "1"]`. */
  args?: string[];
  /** Readiness deadline (default 30 s). */
  startTimeoutMs?: number;
}

export interface EtcdClusterOptions extends EtcdOptions {
  /** Number of members (default 3). */
  members?: number;
}

interface MemberPlan {
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
}

function peerUrl(plan: MemberPlan): string {
  return `http://127.0.0.1:${plan.peerPort}`;
}

interface MemberListReply {
  members?: { name?: string; clientURLs?: string[] }[];
}

class EtcdServerImpl extends ManagedServer implements EtcdServer {
  readonly endpoint: string;
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dir: string;

  constructor(plan: MemberPlan, cluster: MemberPlan[], token: string, options: EtcdOptions) {
    const binary = requireBinary("etcd", "etcd-server", "ETCD_ENDPOINTS");
    const endpoint = `http://127.0.0.1:${plan.clientPort}`;
    super({
      describe: () => `etcd ${plan.name} on ${endpoint}`,
      spawnSpec: () => ({
        command: binary,
        args: [
          "--name",
          plan.name,
          "--data-dir",
          join(plan.dir, "data"),
          "--listen-client-urls",
          endpoint,
          "--advertise-client-urls",
          endpoint,
          "--listen-peer-urls",
          peerUrl(plan),
          "--initial-advertise-peer-urls",
          peerUrl(plan),
          "--initial-cluster",
          cluster.map((m) => `${m.name}=${peerUrl(m)}`).join(","),
          "--initial-cluster-state",
          "new",
          "--initial-cluster-token",
          token,
          "--logger",
          "zap",
          "--log-outputs",
          "stderr",
          "--log-level",
          "warn",
          ...(options.args ?? []),
        ],
        cwd: plan.dir,
        logFile: join(plan.dir, "etcd.log"),
      }),
      // Healthy (has a leader and a quorum) and it is this member that
      // answers, not another process that took the port.
      probe: async () => {
        const health = await httpRequest(`${endpoint}/health`, { timeoutMs: 1_000 });
        if (
          health.status !== 200 ||
          (JSON.parse(health.body) as { health?: string }).health !== "true"
        ) {
          return false;
        }
        const list = await httpRequest(`${endpoint}/v3/cluster/member/list`, {
          body: {},
          timeoutMs: 1_000,
        });
        const members = (JSON.parse(list.body) as MemberListReply).members ?? [];
        return members.some((m) => m.name === plan.name && m.clientURLs?.includes(endpoint));
      },
      stopSignal: "SIGTERM",
      // A member whose peers are gone tries a leadership transfer for 7 s.
      stopTimeoutMs: 3_000,
      dir: plan.dir,
      ...(options.startTimeoutMs !== undefined ? { startTimeoutMs: options.startTimeoutMs } : {}),
    });
    this.endpoint = endpoint;
    this.name = plan.name;
    this.clientPort = plan.clientPort;
    this.peerPort = plan.peerPort;
    this.dir = plan.dir;
  }
}

/** A multi-member etcd cluster on loopback. */
export interface EtcdClusterHandle {
  readonly members: EtcdServer[];
  readonly endpoints: string[];
  /** The member that is leader now (polls until one is elected, 10 s at most). */
  leader(timeoutMs?: number): Promise<EtcdServer>;
  stop(): Promise<void>;
}

async function stopAll(servers: readonly ServerProcess[]): Promise<void> {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

async function startMembers(count: number, options: EtcdOptions): Promise<EtcdServerImpl[]> {
  return retryOnAddressInUse(async () => {
    const id = randomBytes(4).toString("hex");
    const plans: MemberPlan[] = [];
    const servers: EtcdServerImpl[] = [];
    try {
      for (let i = 0; i < count; i++) {
        plans.push({
          name: `etcd-${id}-${i}`,
          clientPort: await freePort(),
          peerPort: await freePort(),
          dir: makeTempDir("etcd"),
        });
      }
      for (const plan of plans) {
        servers.push(new EtcdServerImpl(plan, plans, `locks-${id}`, options));
      }
      // Members of a new cluster only become healthy together, so the first
      // failure (say, a port taken) ends the others' wait for a quorum.
      let firstError: unknown;
      await Promise.all(
        servers.map((server) =>
          server.start().catch(async (error: unknown) => {
            if (firstError !== undefined) return;
            firstError = error;
            await Promise.all(servers.map((other) => other.kill()));
          }),
        ),
      );
      if (firstError !== undefined) throw firstError;
      return servers;
    } catch (error) {
      await stopAll(servers).catch(() => {});
      for (const plan of plans.slice(servers.length)) removeDir(plan.dir);
      // A member that lost its port (StartError.addressInUse) makes
      // retryOnAddressInUse start the whole cluster again on new ports.
      throw error;
    }
  });
}

/** Starts a single-member etcd on free loopback ports in a fresh temporary directory. */
export async function startEtcd(options: EtcdOptions = {}): Promise<EtcdServer> {
  const [server] = await startMembers(1, options);
  return server!;
}

interface StatusReply {
  header?: { member_id?: string };
  leader?: string;
}

/** Starts a cluster of `members` (default 3) etcd members on loopback and waits until it is healthy. */
export async function startEtcdCluster(
  options: EtcdClusterOptions = {},
): Promise<EtcdClusterHandle> {
  const count = options.members ?? 3;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`startEtcdCluster: members must be a positive integer, got ${count}`);
  }
  const members = await startMembers(count, options);
  return {
    members,
    endpoints: members.map((m) => m.endpoint),
    async leader(timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const statuses = await Promise.all(
          members.map(async (member) => {
            if (!member.running) return undefined;
            try {
              const reply = await httpRequest(`${member.endpoint}/v3/maintenance/status`, {
                body: {},
                timeoutMs: 500,
              });
              if (reply.status !== 200) return undefined;
              const status = JSON.parse(reply.body) as StatusReply;
              return { member, id: status.header?.member_id, leader: status.leader };
            } catch {
              return undefined;
            }
          }),
        );
        // The member that itself reports being the leader.
        const leader = statuses.find((s) => s?.id && s.id === s.leader)?.member;
        if (leader) return leader;
        if (performance.now() > deadline) {
          throw new Error(`etcd cluster has no reachable leader after ${timeoutMs} ms`);
        }
        await sleep(50);
      }
    },
    // The data is thrown away: SIGKILL first, since a member stopping
    // gracefully tries a leadership transfer for seconds when its peers are gone.
    async stop() {
      await Promise.all(members.map((m) => m.kill("SIGKILL")));
      await stopAll(members);
    },
  };
}
