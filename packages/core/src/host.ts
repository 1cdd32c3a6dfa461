import type { Backend, BackendHost } from "./backend.js";
import { lockClosed } from "./errors.js";

/** What a client does with the losses its backend reports. */
export type LossTarget<Hold> = Pick<BackendHost<Hold>, "lost" | "lostAll">;

/**
 * A backend is bound once, however many clients share it (two namespaces
 * over one connection): its host hands each loss to every client, each
 * client ignores holds that are not its own, and the last client to close
 * closes the backend.
 */
class SharedHost<Hold> implements BackendHost<Hold> {
  readonly clients = new Set<LossTarget<Hold>>();
  readonly #closing = new AbortController();
  readonly closing: AbortSignal = this.#closing.signal;

  lost(hold: Hold, reason: string, cause?: unknown): void {
    for (const client of this.clients) client.lost(hold, reason, cause);
  }

  lostAll(reason: string, cause?: unknown): void {
    for (const client of [...this.clients]) client.lostAll(reason, cause);
  }

  /** Forgets a closing client; true when it was the last, and then the backend is closing. */
  detach(client: LossTarget<Hold>): boolean {
    this.clients.delete(client);
    if (this.clients.size > 0) return false;
    this.#closing.abort(lockClosed());
    return true;
  }
}

const hosts = new WeakMap<Backend<never>, SharedHost<never>>();

/** Binds `backend` on first use, and adds `client` to those its losses go to. */
export function attachClient<Hold>(
  backend: Backend<Hold>,
  client: LossTarget<Hold>,
): SharedHost<Hold> {
  let host = hosts.get(backend as Backend<never>) as SharedHost<Hold> | undefined;
  if (host === undefined) {
    host = new SharedHost<Hold>();
    hosts.set(backend as Backend<never>, host as SharedHost<never>);
    backend.bind?.(host);
  }
  host.clients.add(client);
  return host;
}
