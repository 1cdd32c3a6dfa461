import { type Check, check, defineOptions, invalidArgument } from "@locks/core/backend";
import { handleWhen, isBrokenCircuitError, noop, retry } from "cockatiel";
import { Etcd3, type IOptions, isRecoverableError, type Namespace } from "etcd3";
import { requestRetryBackoff } from "./backoff.js";

/** Options shared by both forms of {@link etcdBackend}. */
export interface EtcdBackendCommonOptions {
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
  readonly requestTimeoutMs: number;
  /** The endpoints the client talks to, for error messages (empty when unknown). */
  readonly endpoints: readonly string[];
}

/** etcd3's own options, passed through to the client made from `hosts` (etcd3 checks them). */
const asGiven: Check<never> = (value) => value as never;

const parse = defineOptions({
  client: check.instance<Namespace>("an etcd3 `Etcd3` instance (or a Namespace of one)", isClient),
  hosts: ((value, name) =>
    typeof value === "string"
      ? [check.string(value, name)]
      : check.list(check.string)(value, name)) as Check<string[]>,
  requestTimeoutMs: ((value, name) => {
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw invalidArgument(name, "must be positive: a finite number of milliseconds");
    }
    return value;
  }) as Check<number>,
  credentials: asGiven,
  grpcOptions: asGiven,
  auth: asGiven,
  defaultCallOptions: asGiven,
  dialTimeout: asGiven,
  faultHandling: asGiven,
});

/** Checks the factory's options before any I/O and makes the client when asked to. */
export function resolveOptions(options: EtcdBackendOptions): ResolvedOptions {
  const { client, hosts, requestTimeoutMs = 2_000, ...clientOptions } = parse(options);
  if (client !== undefined) {
    const extra = Object.keys(clientOptions)[0];
    if (hosts !== undefined || extra !== undefined) {
      throw invalidArgument(
        `options.${extra ?? "hosts"}`,
        "is only for a client made from `hosts`, not with `client`",
      );
    }
    return { client, owned: false, requestTimeoutMs, endpoints: hostsOf(client) };
  }
  if (hosts === undefined) throw invalidArgument("options", "must have either `client` or `hosts`");
  // etcd3 cannot parse "http://host:port/" (with the slash URLs often carry).
  const endpoints = hosts.map((h) => h.replace(/\/+$/, ""));
  const made = new Etcd3({
    ...clientOptions,
    hosts: endpoints,
    faultHandling: clientOptions.faultHandling ?? defaultFaultHandling(hosts.length),
  } as IOptions);
  return { client: made, owned: true, requestTimeoutMs, endpoints };
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

function isClient(value: object): boolean {
  const c = value as Partial<Namespace>;
  return (
    typeof c.watch === "function" &&
    typeof c.kv === "object" &&
    typeof c.leaseClient === "object" &&
    typeof c.watchClient === "object" &&
    Buffer.isBuffer(c.prefix)
  );
}
