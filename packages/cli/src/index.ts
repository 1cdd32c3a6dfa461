/**
 * `@locks/cli`: the `locks` command. Run `locks --help`; the programmatic
 * entry points below are what the executable uses.
 *
 * @packageDocumentation
 */
export { type BackendSpec, parseBackendUrl, parseBackendUrls } from "./backend-url.js";
export { defaultLockDirectory } from "./backends.js";
export { formatDuration, parseDuration } from "./duration.js";
export { ExitCode } from "./exit-codes.js";
export { main } from "./main.js";
export { UsageError } from "./usage-error.js";
