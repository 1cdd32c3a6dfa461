import { hostname } from "node:os";
import { type BackendSpec, parseBackendUrls } from "./backend-url.js";
import { defaultLockDirectory } from "./backends.js";
import { MAX_DURATION_MS, parseDuration } from "./duration.js";
import { ExitCode } from "./exit-codes.js";
import { UsageError } from "./usage-error.js";

/** An option, as node:util's parseArgs describes one. */
interface OptionSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
}
type Options = Readonly<Record<string, OptionSpec>>;

/** The options given: true for a boolean, the last value of a string (every value with `multiple`). */
type Values<T extends Options> = {
  -readonly [K in keyof T]?: T[K] extends { readonly type: "boolean" }
    ? boolean
    : T[K] extends { readonly multiple: true }
      ? string[]
      : string;
};

const BACKEND_OPTIONS = {
  backend: { type: "string", short: "b", multiple: true },
  namespace: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies Options;

const RUN_OPTIONS = {
  ...BACKEND_OPTIONS,
  timeout: { type: "string", short: "t" },
  nonblock: { type: "boolean", short: "n" },
  ttl: { type: "string" },
  shared: { type: "boolean", short: "s" },
  limit: { type: "string" },
  "conflict-exit-code": { type: "string", short: "E" },
  "kill-after": { type: "string" },
  holder: { type: "string" },
  "min-hold": { type: "string" },
  quiet: { type: "boolean", short: "q" },
  verbose: { type: "boolean", short: "v" },
} as const satisfies Options;

const STATUS_OPTIONS = {
  ...BACKEND_OPTIONS,
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
} as const satisfies Options;

const RELEASE_OPTIONS = {
  ...BACKEND_OPTIONS,
  force: { type: "boolean", short: "f" },
  quiet: { type: "boolean", short: "q" },
} as const satisfies Options;

/** Where the locks live and under which namespace. */
export interface Target {
  readonly backend: BackendSpec;
  /** `undefined`: the core's default namespace. */
  readonly namespace: string | undefined;
  readonly key: string;
}

/** What `locks run` was asked to do. */
export interface RunArgs extends Target {
  readonly command: string;
  readonly args: readonly string[];
  /** ms to wait for the lock; `Infinity` = forever, 0 = one attempt. */
  readonly timeoutMs: number;
  readonly ttlMs: number | undefined;
  readonly shared: boolean;
  readonly limit: number;
  readonly conflictExitCode: number;
  readonly killAfterMs: number;
  /** The label stored with the lock (`--holder`, default `host:pid` of this `locks`); checked by the core's rules in run.ts. */
  readonly holder: string;
  /** `--min-hold`: a command that ends sooner leaves the key held until this long after the grant. */
  readonly minHoldMs: number;
  readonly quiet: boolean;
  readonly verbose: boolean;
}

/** What `locks status` was asked to do. */
export interface StatusArgs extends Target {
  readonly json: boolean;
  readonly quiet: boolean;
}

/** What `locks release --force` was asked to do. */
export interface ReleaseArgs extends Target {
  readonly quiet: boolean;
}

export const DEFAULT_KILL_AFTER_MS = 10_000;

/** Parses `locks run` arguments; `"help"` when `--help` was asked for. */
export function parseRunArgs(argv: readonly string[], env: NodeJS.ProcessEnv): RunArgs | "help" {
  const { values, before, after } = parse("run", argv, RUN_OPTIONS);
  if (values.help) return "help";
  const [key, ...extra] = before;
  if (after === undefined) {
    if (key === undefined) throw new UsageError("locks run: missing <key> -- <command>");
    throw new UsageError(
      extra.length > 0
        ? `locks run: missing -- between the key and the command: locks run ${quote(key)} -- ${extra.map(quote).join(" ")}`
        : `locks run: missing -- <command> after the key ${quote(key)}`,
    );
  }
  if (key === undefined) throw new UsageError("locks run: missing <key> before --");
  if (extra.length > 0) {
    throw new UsageError(
      `locks run: one key expected before --, got ${before.length}: ${before.map(quote).join(" ")}`,
    );
  }
  const [command, ...args] = after;
  if (command === undefined || command === "") {
    throw new UsageError("locks run: missing the command after --");
  }

  if (values.nonblock && values.timeout !== undefined) {
    throw new UsageError("locks run: --nonblock and --timeout cannot be combined");
  }
  const timeoutMs = values.nonblock
    ? 0
    : values.timeout === undefined
      ? Number.POSITIVE_INFINITY
      : parseDuration(values.timeout, "--timeout");
  const ttlMs =
    values.ttl === undefined
      ? undefined
      : positive(parseDuration(values.ttl, "--ttl"), "--ttl", values.ttl);
  const limit =
    values.limit === undefined ? 1 : integer(values.limit, "--limit", 1, Number.MAX_SAFE_INTEGER);
  if (values.quiet && values.verbose) {
    throw new UsageError("locks run: --quiet and --verbose cannot be combined");
  }
  if (values.shared && limit > 1) {
    throw new UsageError("locks run: --shared and --limit cannot be combined");
  }
  return {
    ...target(values, key, env),
    command,
    args,
    timeoutMs,
    ttlMs,
    shared: values.shared ?? false,
    limit,
    conflictExitCode:
      values["conflict-exit-code"] === undefined
        ? ExitCode.conflict
        : integer(values["conflict-exit-code"], "--conflict-exit-code", 0, 255),
    killAfterMs:
      values["kill-after"] === undefined
        ? DEFAULT_KILL_AFTER_MS
        : Math.min(parseDuration(values["kill-after"], "--kill-after"), MAX_DURATION_MS),
    holder: values.holder ?? `${hostname()}:${process.pid}`,
    minHoldMs:
      values["min-hold"] === undefined ? 0 : parseDuration(values["min-hold"], "--min-hold"),
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
  };
}

/** Parses `locks status` arguments; `"help"` when `--help` was asked for. */
export function parseStatusArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): StatusArgs | "help" {
  const { values, before, after } = parse("status", argv, STATUS_OPTIONS);
  if (values.help) return "help";
  return {
    ...target(values, onlyKey("status", before, after), env),
    json: values.json ?? false,
    quiet: values.quiet ?? false,
  };
}

/** Parses `locks release --force` arguments; `"help"` when `--help` was asked for. */
export function parseReleaseArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): ReleaseArgs | "help" {
  const { values, before, after } = parse("release", argv, RELEASE_OPTIONS);
  if (values.help) return "help";
  const key = onlyKey("release", before, after);
  if (!values.force) {
    // A `locks` process holds a key only while its own command runs, and lets it go when the command ends.
    throw new UsageError(
      `locks release: only --force exists: the locks run that holds a key releases it when its command ends; locks release --force ${quote(key)} frees it whoever holds it`,
    );
  }
  return { ...target(values, key, env), quiet: values.quiet ?? false };
}

/** The one positional argument of `locks status` and `locks release`. */
function onlyKey(command: string, before: string[], after: string[] | undefined): string {
  const positionals = after === undefined ? before : [...before, ...after];
  const [key, ...extra] = positionals;
  if (key === undefined) throw new UsageError(`locks ${command}: missing <key>`);
  if (extra.length > 0) {
    throw new UsageError(
      `locks ${command}: one key expected, got ${positionals.length}: ${positionals.map(quote).join(" ")}`,
    );
  }
  return key;
}

function target(
  values: { backend?: string[] | undefined; namespace?: string | undefined },
  key: string,
  env: NodeJS.ProcessEnv,
): Target {
  // An empty variable counts as unset.
  const fromEnv = env.LOCKS_BACKEND?.trim();
  const urls =
    values.backend !== undefined && values.backend.length > 0
      ? values.backend
      : fromEnv
        ? fromEnv.split(/\s+/)
        : [];
  return {
    backend: parseBackendUrls(urls, defaultLockDirectory(env)),
    namespace: values.namespace ?? (env.LOCKS_NAMESPACE || undefined),
    key,
  };
}

/**
 * Parses options as node:util's strict parseArgs does (`--name value`,
 * `--name=value`, `-n value`, `-nvalue`, grouped short booleans such as
 * `-nq`), and splits the positionals at the first `--`. Refusals are in
 * our own words (parseArgs' are several lines of advice). Written here
 * because parseArgs took a millisecond of each start-up, twice.
 */
function parse<T extends Options>(
  command: string,
  argv: readonly string[],
  options: T,
): { values: Values<T>; before: string[]; after: string[] | undefined } {
  const usage = (problem: string): UsageError =>
    new UsageError(`locks ${command}: ${problem} (see locks ${command} --help)`);
  const values: Record<string, string | string[] | boolean> = {};
  const before: string[] = [];
  /** Sets the option `rawName` names; returns whether it took `next` (the next argument) as its value. */
  const take = (
    rawName: string,
    name: string | undefined,
    inline: string | undefined,
    next: string | undefined,
  ): boolean => {
    const spec = name !== undefined && Object.hasOwn(options, name) ? options[name] : undefined;
    if (name === undefined || spec === undefined) throw usage(`unknown option ${quote(rawName)}`);
    if (spec.type === "boolean") {
      if (inline !== undefined) throw usage(`${rawName} takes no value`);
      values[name] = true;
      return false;
    }
    const value = inline ?? next;
    if (value === undefined) throw usage(`${rawName} needs a value`);
    // As parseArgs decides: "-t -1" may be a forgotten value followed by an option.
    if (inline === undefined && value.length > 1 && value.startsWith("-")) {
      throw usage(
        `${rawName} needs a value, and ${JSON.stringify(value)} looks like an option: write --${name}=${quote(value)} if it is the value`,
      );
    }
    const previous = values[name];
    values[name] = spec.multiple ? [...(Array.isArray(previous) ? previous : []), value] : value;
    return inline === undefined;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") return { values: values as Values<T>, before, after: argv.slice(i + 1) };
    if (arg.length < 2 || !arg.startsWith("-")) {
      before.push(arg);
    } else if (arg.startsWith("--")) {
      const equals = arg.indexOf("=");
      const name = equals === -1 ? arg.slice(2) : arg.slice(2, equals);
      if (take(`--${name}`, name, equals === -1 ? undefined : arg.slice(equals + 1), argv[i + 1]))
        i++;
    } else {
      // -n, -nq (booleans), -t5 or -nt5 (a string option takes the rest of the argument).
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j] as string;
        const name = Object.keys(options).find((key) => options[key]?.short === letter);
        const rest = j + 1 < arg.length ? arg.slice(j + 1) : undefined;
        const isString = name !== undefined && options[name]?.type === "string";
        if (take(`-${letter}`, name, isString ? rest : undefined, argv[i + 1])) i++;
        if (isString) break;
      }
    }
  }
  return { values: values as Values<T>, before, after: undefined };
}

function integer(text: string, option: string, min: number, max: number): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`${option} ${JSON.stringify(text)} must be an integer ${range}`);
  }
  return value;
}

function positive(ms: number, option: string, text: string): number {
  if (ms <= 0) throw new UsageError(`${option} ${JSON.stringify(text)} must be longer than 0`);
  return ms;
}

/**
 * An argument or label as a message may show it: bare when it is plain, else
 * JSON-quoted, with the control and format characters JSON leaves as they are
 * (DEL, C1 controls, bidi overrides) escaped too, so that text from elsewhere
 * (another holder's label) cannot break a line or drive the terminal.
 */
export function quote(arg: string): string {
  if (/^[\w./:@%+=-]+$/.test(arg)) return arg;
  return JSON.stringify(arg).replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (char) =>
    char
      .split("")
      .map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`)
      .join(""),
  );
}
