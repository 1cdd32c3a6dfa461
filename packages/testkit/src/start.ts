import { spawn } from "node:child_process";
import { retryOnAddressInUse } from "./process.js";
import { makeTempDir, removeDir } from "./registry.js";
import { freePort } from "./util.js";

/**
 * Starts one server on a free port in a fresh temporary directory, again on
 * a new port when another process took the port meanwhile. `make` prepares
 * the directory and builds the server; on any failure the server is stopped
 * (or, before there was one, the directory removed): nothing is left behind.
 */
export function startInTempDir<S extends { start(): Promise<void>; stop(): Promise<void> }>(
  prefix: string,
  make: (port: number, dir: string) => Promise<S>,
): Promise<S> {
  return retryOnAddressInUse(async () => {
    const port = await freePort();
    const dir = makeTempDir(prefix);
    let server: S | undefined;
    try {
      server = await make(port, dir);
      await server.start();
      return server;
    } catch (error) {
      if (server) await server.stop().catch(() => {});
      else removeDir(dir);
      throw error;
    }
  });
}

/** How `runToEnd` runs a setup command (`initdb`, `mariadb-install-db`, `cp -a`). */
export interface RunOptions {
  readonly cwd: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly uid?: number;
  readonly gid?: number;
}

/** Runs a setup command to its end; rejects with its output when it fails. */
export function runToEnd(command: string, args: string[], options: RunOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      if (code === 0) resolve();
      else
        reject(
          new Error(
            `${command} ${args.join(" ")} failed (code ${code}, signal ${signal}):\n${output}`,
          ),
        );
    });
  });
}
