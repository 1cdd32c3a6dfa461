import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Backend, type Capabilities, MIN_TTL_MS } from "@locks/core";
import { docsRoot } from "./samples.js";

/*
 * The support table of the docs, read from the backends themselves: each
 * configuration below is made with its real factory (no server is contacted:
 * the backends connect lazily) and its frozen `capabilities` manifest is
 * what the table shows. Nothing in the table is typed by hand but the label
 * and the factory call shown next to it.
 */

/** One way to configure a backend, as shown in the table. */
export interface Configuration {
  /** The docs page of the backend: "thread" -> /backends/thread. */
  readonly page: string;
  readonly label: string;
  readonly packageName: string;
  /** The call shown in the table. */
  readonly call: string;
  /** Makes the backend; `scratch` is an empty temporary directory. */
  readonly make: (scratch: string) => Promise<Backend>;
}

/** A configuration and what its manifest says, or why it could not be read. */
export type ManifestRow = Configuration &
  ({ readonly capabilities: Capabilities } | { readonly missing: string });

export const configurations: readonly Configuration[] = [
  {
    page: "thread",
    label: "thread",
    packageName: "@locks/thread",
    call: "threadBackend()",
    make: async () => (await import("@locks/thread")).threadBackend(),
  },
  {
    page: "thread",
    label: "thread, with TTL",
    packageName: "@locks/thread",
    call: "threadBackend({ ttl: true })",
    make: async () => (await import("@locks/thread")).threadBackend({ ttl: true }),
  },
  {
    page: "thread",
    label: "thread, worker_threads table",
    packageName: "@locks/thread",
    call: "threadBackend({ table })",
    make: async () => {
      const { createSharedLockTable, threadBackend } = await import("@locks/thread");
      return threadBackend({ table: createSharedLockTable({ slots: 16 }) });
    },
  },
  {
    page: "file",
    label: "file",
    packageName: "@locks/file",
    call: "fileBackend({ directory })",
    make: async (scratch) => (await import("@locks/file")).fileBackend({ directory: scratch }),
  },
  {
    page: "redis",
    label: "redis, one server or Cluster",
    packageName: "@locks/redis",
    call: "redisBackend({ url })",
    make: async () => (await import("@locks/redis")).redisBackend({ url: "redis://127.0.0.1:1" }),
  },
  {
    page: "redis",
    label: "redis, fair queue",
    packageName: "@locks/redis",
    call: "redisBackend({ url, fair: true })",
    make: async () =>
      (await import("@locks/redis")).redisBackend({ url: "redis://127.0.0.1:1", fair: true }),
  },
  {
    page: "redis",
    label: "Redlock",
    packageName: "@locks/redis",
    call: "redisBackend({ urls: [a, b, c] })",
    make: async () =>
      (await import("@locks/redis")).redisBackend({
        urls: ["redis://127.0.0.1:1", "redis://127.0.0.1:2", "redis://127.0.0.1:3"],
      }),
  },
  {
    page: "etcd",
    label: "etcd",
    packageName: "@locks/etcd",
    call: "etcdBackend({ hosts })",
    make: async () => (await import("@locks/etcd")).etcdBackend({ hosts: "127.0.0.1:1" }),
  },
  {
    page: "postgres",
    label: "postgres",
    packageName: "@locks/postgres",
    call: "postgresBackend({ connectionString })",
    make: async () =>
      (await import("@locks/postgres")).postgresBackend({
        connectionString: "postgres://127.0.0.1:1/locks",
      }),
  },
  {
    page: "postgres",
    label: "postgres, your own client",
    packageName: "@locks/postgres",
    call: "postgresBackend({ client })",
    make: async () => {
      const [{ postgresBackend }, pg] = await Promise.all([
        import("@locks/postgres"),
        import("pg"),
      ]);
      // Never connected: a backend given a client does no I/O until the first lock call.
      return postgresBackend({ client: new pg.default.Client() });
    },
  },
  {
    page: "mysql",
    label: "mysql",
    packageName: "@locks/mysql",
    call: "mysqlBackend({ uri })",
    make: async () =>
      (await import("@locks/mysql")).mysqlBackend({ uri: "mysql://locks@127.0.0.1:1/locks" }),
  },
  {
    page: "mysql",
    label: "mysql, your own pool",
    packageName: "@locks/mysql",
    call: "mysqlBackend({ pool })",
    make: async () => {
      const [{ mysqlBackend }, mysql] = await Promise.all([
        import("@locks/mysql"),
        import("mysql2/promise"),
      ]);
      // No connection is taken from the pool until the first lock call.
      return mysqlBackend({ pool: mysql.default.createPool("mysql://locks@127.0.0.1:1/locks") });
    },
  },
];

/** Reads every configuration's manifest. A package without sources yet is reported, not guessed. */
export async function readManifests(): Promise<ManifestRow[]> {
  const rows: ManifestRow[] = [];
  for (const configuration of configurations) {
    const dir = configuration.packageName.replace("@locks/", "");
    if (!existsSync(join(docsRoot, "..", "packages", dir, "src", "index.ts"))) {
      rows.push({ ...configuration, missing: `${configuration.packageName} has no sources yet` });
      continue;
    }
    const scratch = mkdtempSync(join(tmpdir(), "locks-docs-"));
    try {
      const backend = await configuration.make(scratch);
      try {
        if (!Object.isFrozen(backend.capabilities)) {
          throw new Error(`${configuration.call}: capabilities must be frozen`);
        }
        rows.push({ ...configuration, capabilities: { ...backend.capabilities } });
      } finally {
        await backend.close();
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  return rows;
}

const FLAGS = ["ttl", "fencing", "shared", "semaphore", "fair", "notify"] as const;

/**
 * The shortest `ttlMs` a client over this backend accepts, as the core
 * computes it: the core's own floor, or the manifest's `minTtlMs` when higher.
 */
export function ttlFloorMs(capabilities: Capabilities): number {
  return Math.max(MIN_TTL_MS, capabilities.minTtlMs ?? 0);
}

/** The support table as Markdown, linking each row to its backend page. */
export function renderManifests(rows: readonly ManifestRow[]): string {
  const header = `| backend | scope | ${FLAGS.join(" | ")} | ttlMs floor |`;
  const rule = `|---|---|${FLAGS.map(() => ":-:").join("|")}|--:|`;
  const lines = [header, rule];
  const missing: string[] = [];
  for (const row of rows) {
    if ("missing" in row) {
      missing.push(`\`${row.call}\` (${row.missing})`);
      continue;
    }
    const c = row.capabilities;
    const cells = FLAGS.map((flag) => (c[flag] ? "✓" : "—"));
    // A no-break space: "2,000 ms" must not wrap in its narrow column.
    const floor = `${ttlFloorMs(c).toLocaleString("en-US")}\u00a0ms`;
    lines.push(
      `| [${row.label}](/backends/${row.page})<br>\`${row.call}\` | ${c.scope} | ${cells.join(" | ")} | ${floor} |`,
    );
  }
  const out = [
    "<!-- generated by docs/scripts/capabilities.ts from the backends' capabilities manifests: do not edit -->",
    "",
    // A header with no rows says nothing: only the note below, then.
    ...(lines.length > 2 ? [...lines, ""] : []),
  ];
  if (missing.length > 0) {
    out.push(
      `::: warning Not in this build\nThese configurations could not be read because their package has not landed yet: ${missing.join(", ")}.\n:::`,
      "",
    );
  }
  return out.join("\n");
}
