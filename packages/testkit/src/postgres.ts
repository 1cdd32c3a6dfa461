import { chownSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pgQuery } from "./probe.js";
import { ManagedServer, type ServerProcess } from "./process.js";
import { makeTempDir } from "./registry.js";
import { runToEnd, startInTempDir } from "./start.js";
import { postgresBinDir } from "./util.js";

/** A PostgreSQL server listening on 127.0.0.1 only, trust authentication. */
export interface PostgresServer extends ServerProcess {
  /** `postgresql://postgres@127.0.0.1:<port>/postgres` */
  readonly connectionString: string;
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The private temporary directory: data dir `data`, the Unix socket, log `postgres.log`. */
  readonly dir: string;
  /**
   * Stops the server (fast shutdown, or `immediate`: like `pg_ctl -m immediate`,
   * a crash followed by recovery) and starts it again on the same port.
   */
  restart(options?: { immediate?: boolean }): Promise<void>;
}

export interface PostgresOptions {
  /** Extra server settings, passed as `-c name=value`. */
  settings?: Record<string, string | number | boolean>;
  /** Readiness deadline (default 30 s). */
  startTimeoutMs?: number;
}

/** The account postgres runs as: itself when not root, else the `postgres` user. */
interface Account {
  uid?: number;
  gid?: number;
}

function account(): Account {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return {};
  const name = process.env.LOCKS_PG_USER ?? "postgres";
  let passwd = "";
  try {
    passwd = readFileSync("/etc/passwd", "utf8");
  } catch {
    // fall through to the error below
  }
  for (const line of passwd.split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name && uid && gid) return { uid: Number(uid), gid: Number(gid) };
  }
  throw new Error(
    `postgres refuses to run as root and there is no "${name}" user to run it as: ` +
      `install the Debian package "postgresql" (it creates the user) or create the user.`,
  );
}

function chownTo(path: string, who: Account): void {
  if (who.uid !== undefined && who.gid !== undefined) chownSync(path, who.uid, who.gid);
}

const ENV: NodeJS.ProcessEnv = { ...process.env, LC_ALL: "C", LANG: "C" };

let template: Promise<string> | undefined;

/**
 * One initdb per test process: later servers copy its data directory
 * (`cp -a` keeps owner and modes), which is several times faster.
 */
function templateDataDir(binDir: string, who: Account): Promise<string> {
  template ??= (async () => {
    const dir = makeTempDir("pg-template");
    chownTo(dir, who);
    const data = join(dir, "data");
    await runToEnd(
      join(binDir, "initdb"),
      [
        "-D",
        data,
        "--auth=trust",
        "--username=postgres",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
      ],
      { cwd: dir, env: ENV, ...who },
    );
    return data;
  })();
  template.catch(() => {
    template = undefined;
  });
  return template;
}

function settingArgs(settings: Record<string, string | number | boolean>): string[] {
  return Object.entries(settings).flatMap(([name, value]) => [
    "-c",
    `${name}=${typeof value === "boolean" ? (value ? "on" : "off") : String(value)}`,
  ]);
}

class PostgresServerImpl extends ManagedServer implements PostgresServer {
  readonly host = "127.0.0.1" as const;
  readonly connectionString: string;

  constructor(
    readonly port: number,
    readonly dir: string,
    binDir: string,
    who: Account,
    options: PostgresOptions,
  ) {
    const socket = join(dir, `.s.PGSQL.${port}`);
    super({
      describe: () => `postgres on 127.0.0.1:${port}`,
      spawnSpec: () => ({
        command: join(binDir, "postgres"),
        args: [
          "-D",
          join(dir, "data"),
          ...settingArgs({
            listen_addresses: "127.0.0.1",
            port,
            unix_socket_directories: dir,
            fsync: false,
            full_page_writes: false,
            max_connections: 200,
            shared_buffers: "32MB",
            logging_collector: false,
            log_min_messages: "warning",
            ...options.settings,
          }),
        ],
        cwd: dir,
        logFile: join(dir, "postgres.log"),
        env: ENV,
        ...who,
      }),
      // Through the private Unix socket (created after the TCP socket), so a
      // server of another process that took the port cannot answer for this one.
      probe: async () => {
        const rows = await pgQuery({ path: socket }, "SELECT 1", { timeoutMs: 1_000 });
        return rows[0]?.[0] === "1";
      },
      stopSignal: "SIGINT", // fast shutdown
      dir,
      ...(options.startTimeoutMs !== undefined ? { startTimeoutMs: options.startTimeoutMs } : {}),
    });
    this.connectionString = `postgresql://postgres@127.0.0.1:${port}/postgres`;
  }

  override restart(options: { immediate?: boolean } = {}): Promise<void> {
    return this.restartAfter(options.immediate ? "SIGQUIT" : "SIGINT");
  }
}

/**
 * Starts PostgreSQL (trust authentication, user and database "postgres",
 * fsync off, max_connections 200) on a free loopback port in a fresh
 * temporary directory. As root it runs as the `postgres` user.
 */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const binDir = postgresBinDir();
  const who = account();
  const templateData = await templateDataDir(binDir, who);
  return startInTempDir("postgres", async (port, dir) => {
    chownTo(dir, who);
    await runToEnd("cp", ["-a", templateData, join(dir, "data")], { cwd: dir });
    return new PostgresServerImpl(port, dir, binDir, who, options);
  });
}
