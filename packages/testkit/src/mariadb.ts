import { chownSync, readFileSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { ManagedServer, type ServerProcess } from "./process.js";
import { runToEnd, startInTempDir } from "./start.js";
import { MissingBinaryError, requireBinary, which } from "./util.js";

/** A MariaDB server listening on 127.0.0.1 only, with real grants. */
export interface MariadbServer extends ServerProcess {
  /** `mysql://locks:locks@127.0.0.1:<port>/locks`: a user with every privilege, database `locks`. */
  readonly url: string;
  /**
   * `mysql://locks_limited:locks@127.0.0.1:<port>/locks`: a user that may only
   * SELECT in `locks` (no CREATE, no INSERT), for privilege errors.
   */
  readonly limitedUrl: string;
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The private temporary directory: data dir `data`, the Unix socket, log `mariadb.log`. */
  readonly dir: string;
}

export interface MariadbOptions {
  /** Readiness deadline (default 30 s). */
  startTimeoutMs?: number;
}

/** Run at every start (`--init-file`): the test users and database. */
const INIT_SQL = `CREATE DATABASE IF NOT EXISTS locks;
CREATE USER IF NOT EXISTS 'locks'@'%' IDENTIFIED BY 'locks';
GRANT ALL PRIVILEGES ON *.* TO 'locks'@'%';
CREATE USER IF NOT EXISTS 'locks_limited'@'%' IDENTIFIED BY 'locks';
GRANT SELECT ON locks.* TO 'locks_limited'@'%';
`;

/** The account mariadbd runs as: `--user=mysql` when root (it refuses to run as root otherwise). */
function mysqlAccount(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === "mysql" && uid && gid) return { uid: Number(uid), gid: Number(gid) };
  }
  throw new Error(
    'mariadbd refuses to run as root and there is no "mysql" user: install the Debian package "mariadb-server"',
  );
}

/**
 * Ready when the server's private Unix socket (created after the TCP one)
 * sends its handshake (protocol version 10): a server of another process
 * that took the port cannot answer for this one.
 */
function handshake(path: string, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ path });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("data", (data: Buffer) => done(data.length > 4 && data[4] === 10));
    socket.once("error", () => done(false));
    socket.once("close", () => done(false));
  });
}

class MariadbServerImpl extends ManagedServer implements MariadbServer {
  readonly host = "127.0.0.1" as const;
  readonly url: string;
  readonly limitedUrl: string;

  constructor(
    readonly port: number,
    readonly dir: string,
    binary: string,
    user: string | undefined,
    options: MariadbOptions,
  ) {
    const socket = join(dir, "mysqld.sock");
    super({
      describe: () => `mariadbd on 127.0.0.1:${port}`,
      spawnSpec: () => ({
        command: binary,
        args: [
          "--no-defaults",
          ...(user !== undefined ? [`--user=${user}`] : []),
          `--datadir=${join(dir, "data")}`,
          `--port=${port}`,
          `--socket=${socket}`,
          `--pid-file=${join(dir, "mariadb.pid")}`,
          "--bind-address=127.0.0.1",
          `--init-file=${join(dir, "init.sql")}`,
          "--skip-name-resolve",
          "--skip-log-bin",
          "--innodb-buffer-pool-size=16M",
          "--innodb-log-file-size=16M",
          "--innodb-flush-log-at-trx-commit=2",
          "--max-connections=300",
          "--performance-schema=ON",
        ],
        cwd: dir,
        logFile: join(dir, "mariadb.log"),
      }),
      probe: () => handshake(socket),
      stopSignal: "SIGTERM",
      dir,
      ...(options.startTimeoutMs !== undefined ? { startTimeoutMs: options.startTimeoutMs } : {}),
    });
    this.url = `mysql://locks:locks@127.0.0.1:${port}/locks`;
    this.limitedUrl = `mysql://locks_limited:locks@127.0.0.1:${port}/locks`;
  }
}

/**
 * Starts MariaDB on a free loopback port (never 3306) in a fresh temporary
 * directory, data directory made by `mariadb-install-db`, with the users
 * `locks` (every privilege) and `locks_limited` (SELECT only) and the database
 * `locks`. As root it runs as the `mysql` user.
 */
export async function startMariadb(options: MariadbOptions = {}): Promise<MariadbServer> {
  // mariadbd lives in /usr/sbin, which a non-root PATH often lacks.
  const binary = which("mariadbd") ?? which("mariadbd", "/usr/sbin");
  if (binary === undefined) throw new MissingBinaryError("mariadbd", "mariadb-server", "MYSQL_URL");
  const install = requireBinary("mariadb-install-db", "mariadb-server", "MYSQL_URL");
  const account = mysqlAccount();
  return startInTempDir("mariadb", async (port, dir) => {
    writeFileSync(join(dir, "init.sql"), INIT_SQL);
    if (account !== undefined) chownSync(dir, account.uid, account.gid);
    await runToEnd(
      install,
      [
        "--no-defaults",
        ...(account !== undefined ? ["--user=mysql"] : []),
        `--datadir=${join(dir, "data")}`,
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
      ],
      { cwd: dir },
    );
    return new MariadbServerImpl(port, dir, binary, account && "mysql", options);
  });
}
