import {
  type Attempt,
  type Backend,
  type Capabilities,
  type KeyRef,
  type KeyStatus,
  type LockRequest,
  monotonicNow,
  type Unsubscribe,
  WakeRegistry,
} from "@locks/core/backend";

/**
 * One held lock, as the store keeps it. The same object is the backend's
 * hold: the grant hands it to the core, which passes it back with every
 * `extend` and `release` of that lease.
 */
interface Entry {
  readonly owner: string;
  readonly fencingToken: bigint;
  /** The holder's label, for inspect. */
  readonly holder: string | undefined;
  /** Monotonic ms. */
  expiresAt: number;
}

// The "store": one per process, shared by all backend instances.
const entries = new Map<string, Entry>(); // by request.scoped
const wakes = new WakeRegistry(); // who waits for which key
let lastToken = 0n;

const capabilities: Capabilities = Object.freeze({
  scope: "process", // contenders: async tasks of this process
  ttl: true, // an abandoned lock frees itself after ttlMs
  fencing: true, // tokens strictly increase
  shared: false, // the core refuses mode "shared" for us
  semaphore: false, // ...and limit > 1
  fair: false, // waiters race when the key frees
  notify: true, // release wakes waiters through subscribe()
});

/** The entry of `key`, forgetting (and announcing) one whose TTL ran out. */
function liveEntry(key: string): Entry | undefined {
  const entry = entries.get(key);
  if (entry !== undefined && entry.expiresAt <= monotonicNow()) {
    entries.delete(key);
    wakes.wake(key);
    return undefined;
  }
  return entry;
}

/** A complete, if small, backend: exclusive locks in a Map; TTL, fencing. */
export function mapBackend(): Backend<Entry> {
  return {
    name: "map",
    capabilities,

    async tryAcquire(request: LockRequest): Promise<Attempt<Entry>> {
      const current = liveEntry(request.scoped);
      if (current !== undefined) {
        // Not granted; say when the holder's lease ends, to bound polling.
        return { granted: false, retryAfterMs: current.expiresAt - monotonicNow() };
      }
      lastToken += 1n;
      const hold: Entry = {
        owner: request.owner,
        fencingToken: lastToken,
        holder: request.holder,
        expiresAt: monotonicNow() + request.ttlMs,
      };
      entries.set(request.scoped, hold);
      return { granted: true, fencingToken: lastToken, hold };
    },

    async extend(request: LockRequest, hold: Entry, ttlMs: number): Promise<boolean> {
      // Ours only while it is still the key's entry: not after expiry or a takeover.
      if (liveEntry(request.scoped) !== hold) return false;
      hold.expiresAt = monotonicNow() + ttlMs;
      return true;
    },

    async release(request: LockRequest, hold: Entry | undefined): Promise<void> {
      const current = entries.get(request.scoped);
      // No hold: an attempt's outcome is unknown; free what this owner may hold.
      const ours = hold === undefined ? current?.owner === request.owner : current === hold;
      // Idempotent, and never another holder's lock.
      if (current === undefined || !ours) return;
      entries.delete(request.scoped);
      wakes.wake(request.scoped);
    },

    subscribe(key: KeyRef, onChange: () => void): Unsubscribe {
      return wakes.add(key.scoped, { wake: onChange });
    },

    async inspect(key: KeyRef): Promise<KeyStatus> {
      const entry = liveEntry(key.scoped);
      if (entry === undefined) return { holders: [] };
      const { holder, owner, fencingToken } = entry;
      const expiresInMs = entry.expiresAt - monotonicNow();
      return {
        limit: 1,
        holders: [{ holder, owner, mode: "exclusive", fencingToken, expiresInMs }],
      };
    },

    // The evicted holder's next extend finds another entry (or none) and says false.
    async forceRelease(key: KeyRef): Promise<boolean> {
      if (liveEntry(key.scoped) === undefined) return false;
      entries.delete(key.scoped);
      wakes.wake(key.scoped);
      return true;
    },

    async close(): Promise<void> {
      // Nothing to close: the store outlives this instance, as a server
      // would, and the core released every lease of it before calling this.
    },
  };
}
