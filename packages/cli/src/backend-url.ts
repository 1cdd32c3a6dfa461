import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { UsageError } from "./usage-error.js";

/**
 * Where `locks` takes its locks: what one or more `--backend` URLs say.
 *
 * @group Backend URLs
 */
export type BackendSpec =
  | {
      readonly kind: "file";
      /** Absolute directory that holds the lock files. */
      readonly directory: string;
      /** True for the per-user default directory (no `--backend` given). */
      readonly isDefault: boolean;
    }
  | { readonly kind: "redis"; readonly urls: readonly string[] }
  | {
      readonly kind: "etcd";
      readonly hosts: readonly string[];
      readonly auth?: { readonly username: string; readonly password: string };
    }
  | { readonly kind: "postgres"; readonly connectionString: string }
  | { readonly kind: "mysql"; readonly uri: string };

const SCHEMES = "file://, redis://, rediss://, etcd://, postgres://, mysql://";
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

/**
 * Parses the `--backend` values (one, or several redis:// URLs for Redlock)
 * without any I/O. `defaultDirectory` is used when none is given; a relative
 * `file:` path is resolved against `cwd`.
 *
 * @group Backend URLs
 */
export function parseBackendUrls(
  values: readonly string[],
  defaultDirectory: string,
  cwd: string = process.cwd(),
): BackendSpec {
  if (values.length === 0) return { kind: "file", directory: defaultDirectory, isDefault: true };
  const specs = values.map((value) => parseBackendUrl(value, cwd));
  const first = specs[0]!;
  if (specs.length === 1) return first;
  if (specs.every((spec) => spec.kind === "redis")) {
    const urls = specs.flatMap((spec) => (spec.kind === "redis" ? spec.urls : []));
    refuseSameServer(urls);
    return { kind: "redis", urls };
  }
  const kinds = [...new Set(specs.map((spec) => spec.kind))].join(", ");
  throw new UsageError(
    `several --backend values are only for Redlock (all redis:// URLs), got: ${kinds}`,
  );
}

/**
 * Parses one `--backend` URL. A `file:` URL without `//` holds a path
 * relative to `cwd` (`file:locks` is `<cwd>/locks`), as a relative URL
 * reference would be read against the working directory's URL.
 *
 * @group Backend URLs
 */
export function parseBackendUrl(value: string, cwd: string = process.cwd()): BackendSpec {
  const scheme = SCHEME.exec(value)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    throw new UsageError(
      `--backend ${JSON.stringify(value)} is not a URL: use one of ${SCHEMES} (e.g. file:///var/lock/app)`,
    );
  }
  switch (scheme) {
    case "file":
      return { kind: "file", directory: parseFileUrl(value, cwd), isDefault: false };
    case "redis":
    case "rediss":
      parseServerUrl(value, true);
      return { kind: "redis", urls: [value] };
    case "etcd":
    case "etcds":
      return parseEtcdUrl(value, scheme === "etcds");
    case "postgres":
    case "postgresql":
      parseServerUrl(value, false);
      return { kind: "postgres", connectionString: value };
    case "mysql":
    case "mariadb":
      parseServerUrl(value, true);
      // mysql2 reads mysql:// URIs only; mariadb:// is the same server protocol.
      return { kind: "mysql", uri: scheme === "mysql" ? value : `mysql${value.slice(7)}` };
    default:
      throw new UsageError(
        `unknown backend scheme "${scheme}:" in --backend ${JSON.stringify(redact(value))}: use one of ${SCHEMES}`,
      );
  }
}

/** The URL with its password replaced by `***`, for messages. */
export function redact(value: string): string {
  return value.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/@:]*:)[^/@]*@/, "$1***@");
}

function malformed(value: string, problem: string): UsageError {
  return new UsageError(`malformed --backend ${JSON.stringify(redact(value))}: ${problem}`);
}

function parseFileUrl(value: string, cwd: string): string {
  const usage = "use file:///absolute/directory, or file:relative/directory";
  const path = value.slice(value.indexOf(":") + 1);
  if (path === "") throw malformed(value, `no directory: ${usage}`);
  // fileURLToPath reads "file:relative/dir" as "/relative/dir": resolve it ourselves.
  const relative = !path.startsWith("/");
  if (relative && path.startsWith("~")) {
    throw malformed(value, `~ is not expanded here: ${usage}`);
  }
  let url: URL;
  let directory: string;
  try {
    url = relative ? new URL(path, pathToFileURL(join(cwd, "/"))) : new URL(value);
    directory = resolve(fileURLToPath(url));
  } catch (error) {
    throw malformed(value, `${(error as Error).message} (${usage})`);
  }
  // A "#" or "?" in a directory name is written %23 or %3F; unescaped, a URL would drop what follows.
  if (url.search !== "" || url.hash !== "")
    throw malformed(value, `no query or fragment: ${usage}`);
  if (!isAbsolute(directory) || directory === "/") throw malformed(value, usage);
  return directory;
}

/**
 * Refuses a Redlock list naming one server twice: a quorum over one server is
 * not a quorum. A server is its host and port: two databases of one server
 * fail together, and so do TLS and plain URLs of one address. Hosts are
 * compared as a connection would see them (case, a trailing dot, IPv4 and
 * IPv6 spellings, default port 6379), but names are not resolved:
 * "localhost" can be ::1, a socket another server may listen on.
 */
function refuseSameServer(urls: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const value of urls) {
    const server = redisServer(value);
    const earlier = seen.get(server);
    if (earlier !== undefined) {
      throw new UsageError(
        `--backend ${JSON.stringify(redact(earlier))} and ${JSON.stringify(redact(value))} are the same server (${server}): Redlock needs distinct servers`,
      );
    }
    seen.set(server, value);
  }
}

/** "host:port" of a redis:// URL, normalised. */
function redisServer(value: string): string {
  const url = parseServerUrl(value, true);
  // redis: URLs have opaque hosts (kept as written); an http: URL normalises them as a connection would.
  let host: string;
  try {
    host = new URL(`http://${url.hostname}`).hostname;
  } catch {
    host = url.hostname.toLowerCase();
  }
  return `${host.replace(/(?<=[^.])\.$/, "")}:${url.port === "" ? 6379 : Number(url.port)}`;
}

function parseServerUrl(value: string, needHost: boolean): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw malformed(value, "not a valid URL");
  }
  if (needHost && url.hostname === "") throw malformed(value, "no host");
  return url;
}

function parseEtcdUrl(value: string, tls: boolean): BackendSpec {
  const usage = "use etcd://[user:password@]host:port[,host:port...]";
  const rest = value.slice(value.indexOf(":") + 1);
  if (!rest.startsWith("//")) throw malformed(value, usage);
  let authority = rest.slice(2).replace(/\/$/, "");
  let auth: { username: string; password: string } | undefined;
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    const credentials = authority.slice(0, at);
    const colon = credentials.indexOf(":");
    if (colon <= 0) throw malformed(value, usage);
    auth = {
      username: decode(value, credentials.slice(0, colon)),
      password: decode(value, credentials.slice(colon + 1)),
    };
    authority = authority.slice(at + 1);
  }
  if (authority === "" || /[/?#]/.test(authority)) {
    throw malformed(value, `${usage} (no path or query)`);
  }
  const hosts = authority.split(",").map((endpoint) => {
    const match = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(endpoint);
    const port = match?.[2] === undefined ? 2379 : Number(match[2]);
    if (match === null || port < 1 || port > 65_535) {
      throw malformed(value, `bad endpoint ${JSON.stringify(endpoint)}: use host:port`);
    }
    return `${tls ? "https" : "http"}://${match[1]}:${port}`;
  });
  return auth === undefined ? { kind: "etcd", hosts } : { kind: "etcd", hosts, auth };
}

function decode(value: string, part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw malformed(value, "bad percent-encoding in the credentials");
  }
}
