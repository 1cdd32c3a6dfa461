import {
  type Attempt,
  type Backend,
  type Capabilities,
  type LockRequest,
  lockClosed,
  monotonicNow,
  scopedKey,
  type Unsubscribe,
} from "@locks/core";

/** Who holds a key, and until when (monotonic ms). */
interface Hold {
  readonly owner: string;
  expiresAt: number;
}

// The "store": one per process, shared by all backend instances.
const holds = new Map<string, Hold>();
const listeners = new Map<string, Set<() => void>>();
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

/** The hold of `id`, forgetting (and announcing) one whose TTL ran out. */
function liveHold(id: string): Hold | undefined {
  const hold = holds.get(id);
  if (hold !== undefined && hold.expiresAt <= monotonicNow()) {
    holds.delete(id);
    notify(id);
    return undefined;
  }
  return hold;
}

function notify(id: string): void {
  for (const listener of [...(listeners.get(id) ?? [])]) listener();
}

/** A complete, if small, backend: exclusive locks in a Map; TTL, fencing. */
export function mapBackend(): Backend {
  // This instance's holds, released by close().
  const mine = new Map<string, LockRequest>();
  let closed = false;

  const release = async (req: LockRequest): Promise<void> => {
    mine.delete(req.owner);
    const id = scopedKey(req.namespace, req.key);
    // Owner-checked and idempotent: never free another holder's lock.
    if (holds.get(id)?.owner !== req.owner) return;
    holds.delete(id);
    notify(id);
  };

  return {
    name: "map",
    capabilities,

    async tryAcquire(req: LockRequest): Promise<Attempt> {
      if (closed) throw lockClosed("map backend");
      const id = scopedKey(req.namespace, req.key);
      const current = liveHold(id);
      if (current !== undefined) {
        // Not granted; say when the holder's lease ends, to bound polling.
        const retryAfterMs = current.expiresAt - monotonicNow();
        return { granted: false, retryAfterMs };
      }
      const expiresAt = monotonicNow() + req.ttlMs;
      holds.set(id, { owner: req.owner, expiresAt });
      mine.set(req.owner, req);
      lastToken += 1n;
      return { granted: true, fencingToken: lastToken };
    },

    async extend(req: LockRequest, ttlMs: number): Promise<boolean> {
      const hold = liveHold(scopedKey(req.namespace, req.key));
      if (hold === undefined || hold.owner !== req.owner) return false;
      hold.expiresAt = monotonicNow() + ttlMs;
      return true;
    },

    release,

    subscribe(req: LockRequest, onChange: () => void): Unsubscribe {
      const id = scopedKey(req.namespace, req.key);
      const set = listeners.get(id) ?? new Set<() => void>();
      listeners.set(id, set);
      set.add(onChange);
      return () => {
        set.delete(onChange);
        if (set.size === 0) listeners.delete(id);
      };
    },

    async close(): Promise<void> {
      closed = true;
      await Promise.all([...mine.values()].map(release));
    },
  };
}
