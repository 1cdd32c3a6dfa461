import { invalidArgument } from "@locks/core";
import { handleWhen, isBrokenCircuitError, noop, retry } from "cockatiel";
import { Etcd3, type IOptions, isRecoverableError, type Namespace } from "etcd3";
import { requestRetryBackoff } from "./backoff.js";

/** Options shared by both forms of {@link etcdBackend}. */
export interface EtcdBackendCommonOptions {
  /**
   * Prefix of every key the backend writes (default `"locks"`). Lock keys
   * are `<prefix>/<digest of namespace and key>/<w|r>/<lease id>-<n>`.
   * Applications that must never contend with each other use distinct prefixes
   * (or distinct `namespace`s in `createLocks`).
   */
  readonly prefix?: string;
  /**
   * Deadline of each request to etcd in ms (default 2 000). A request
   * that gets no answer in time fails with `BACKEND_UNAVAILABLE`; a grant
   * that arrives after the lock's TTL is refused and released (never
   * reported as unavailable: the server answered). Keep it short: when a leader dies, etcd
   * leaves a write that was on its way to it hanging until the client gives
   * up, and a hanging release holds up the whole queue. Every request the
   * backend sends is safe to repeat.
   */
  readonly requestTimeoutMs?: number;
}

/** Use an etcd3 client you already have; the backend never closes it. */
export interface EtcdClientOptions extends EtcdBackendCommonOptions {
  /** An `Etcd3` instance (or a `Namespace` of one: the backend writes under its prefix). */
  readonly client: Namespace;
}

/**
 * Let the backend make its own etcd3 client from these options (closed by
 * `close()`). Unless you pass `faultHandling`, the client retries a failed
 * request on the next member with a short back-off and has no circuit
 * breaker: etcd3's default breaker refuses every call for 5 s after three
 * failures, longer than a short lease survives.
 */
export interface EtcdHostsOptions extends EtcdBackendCommonOptions, Omit<IOptions, "hosts"> {
  /** `"127.0.0.1:2379"`, `"http://10.0.0.1:2379"`, or one such address per cluster member. */
  readonly hosts: string | readonly string[];
}

/** Options of {@link etcdBackend}: a client, or what it takes to make one. */
export type EtcdBackendOptions = EtcdClientOptions | EtcdHostsOptions;

/** Validated options. */
export interface ResolvedOptions {
  readonly client: Namespace;
  /** True when the backend made the client and must close it. */
  readonly owned: boolean;
  readonly prefix: string;
  readonly requestTimeoutMs: number;
  /** The endpoints the client talks to, for error messages (empty when unknown). */
  readonly endpoints: readonly string[];
}

const DEFAULT_REQUEST_TIMEOUT_MS = 2_000;

/** Checks the factory's options before any I/O and makes the client when asked to. */
export function resolveOptions(options: EtcdBackendOptions): ResolvedOptions {
  if (typeof options !== "object" || options === null) {
    throw invalidArgument("options", "must be an object with `client` or `hosts`");
  }
  const o = options as Partial<EtcdClientOptions & EtcdHostsOptions>;
  const prefix = o.prefix ?? "locks";
  if (typeof prefix !== "string" || prefix.length === 0) {
    throw invalidArgument("prefix", "must be a non-empty string");
  }
  const requestTimeoutMs = o.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  if (
    typeof requestTimeoutMs !== "number" ||
    !Number.isFinite(requestTimeoutMs) ||
    requestTimeoutMs <= 0
  ) {
    throw invalidArgument("requestTimeoutMs", "must be a positive finite number of milliseconds");
  }
  if (o.client !== undefined && o.hosts !== undefined) {
    throw invalidArgument("options", "must have either `client` or `hosts`, not both");
  }
  if (o.client !== undefined) {
    if (!isClient(o.client)) {
      throw invalidArgument("client", "must be an etcd3 `Etcd3` instance (or a Namespace of one)");
    }
    return {
      client: o.client,
      owned: false,
      prefix,
      requestTimeoutMs,
      endpoints: hostsOf(o.client),
    };
  }
  const hosts = o.hosts;
  const list = typeof hosts === "string" ? [hosts] : hosts;
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    !list.every((h) => typeof h === "string" && h.length > 0)
  ) {
    throw invalidArgument("hosts", "must be a non-empty string or a non-empty array of strings");
  }
  const { prefix: _p, requestTimeoutMs: _r, hosts: _h, ...clientOptions } = o;
  // etcd3 cannot parse "http://host:port/" (with the slash URLs often carry).
  const endpoints = list.map((h) => h.replace(/\/+$/, ""));
  const client = new Etcd3({
    ...clientOptions,
    hosts: endpoints,
    faultHandling: clientOptions.faultHandling ?? defaultFaultHandling(list.length),
  });
  return { client, owned: true, prefix, requestTimeoutMs, endpoints };
}

/**
 * Retry on another member with a short back-off, bounded by each request's
 * deadline; no circuit breaker (see {@link EtcdHostsOptions}).
 */
function defaultFaultHandling(members: number): IOptions["faultHandling"] {
  const recoverable = handleWhen(
    (error) => isRecoverableError(error) && !isBrokenCircuitError(error),
  );
  return {
    host: () => noop,
    global: retry(recoverable, {
      maxAttempts: Math.max(3, members * 2),
      backoff: requestRetryBackoff(),
    }),
  };
}

/** The hosts a given etcd3 client was made with, when it tells (for error messages). */
function hostsOf(client: Namespace): readonly string[] {
  // etcd3 keeps its options on a protected field; a Namespace made by `namespace()` shares them.
  const hosts = (client as unknown as { readonly options?: { readonly hosts?: unknown } }).options
    ?.hosts;
  if (typeof hosts === "string") return [hosts];
  return Array.isArray(hosts) ? hosts.filter((h): h is string => typeof h === "string") : [];
}

function isClient(value: unknown): value is Namespace {
  const c = value as Partial<Namespace> | null;
  return (
    typeof c === "object" &&
    c !== null &&
    typeof c.watch === "function" &&
    typeof c.kv === "object" &&
    typeof c.leaseClient === "object" &&
    typeof c.watchClient === "object" &&
    Buffer.isBuffer(c.prefix)
  );
}
