import { invalidArgument } from "@locks/core";
import { ExponentialBackoff, handleWhen, isBrokenCircuitError, noop, retry } from "cockatiel";
import { Etcd3, type IOptions, isRecoverableError, type Namespace } from "etcd3";

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
   * that gets no answer in time fails with `BACKEND_UNAVAILABLE`; requests
   * that take a lock are also bounded by the lock's TTL, since a later grant
   * could not be trusted anyway. Keep it short: when a leader dies, etcd
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
    return { client: o.client, owned: false, prefix, requestTimeoutMs };
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
  const client = new Etcd3({
    ...clientOptions,
    // etcd3 cannot parse "http://host:port/" (with the slash URLs often carry).
    hosts: list.map((h) => h.replace(/\/+$/, "")),
    faultHandling: clientOptions.faultHandling ?? defaultFaultHandling(list.length),
  });
  return { client, owned: true, prefix, requestTimeoutMs };
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
      backoff: new ExponentialBackoff({ initialDelay: 20, maxDelay: 250 }),
    }),
    // etcd3 re-opens a broken watch stream after this back-off (its default grows to 30 s).
    watchBackoff: new ExponentialBackoff({ initialDelay: 50, maxDelay: 500 }).next(),
  };
}

function isClient(value: unknown): value is Namespace {
  const c = value as Partial<Namespace> | null;
  return (
    typeof c === "object" &&
    c !== null &&
    typeof c.watch === "function" &&
    typeof c.kv === "object" &&
    typeof c.leaseClient === "object" &&
    Buffer.isBuffer(c.prefix)
  );
}
