import { type LockRequest, settledWithin, WakeRegistry } from "@locks/core/backend";
import type { Cluster, Redis } from "ioredis";
import { DISCONNECT_WAIT_MS, shutDown } from "./clients.js";
import type { Connection } from "./connection.js";
import { keyLayout } from "./layout.js";
import { type WireMode, wireMode } from "./wire.js";

/** How long a channel stays subscribed after its last waiter left, so back-to-back waits cost no SUBSCRIBE. */
const LINGER_MS = 2_000;
/** How long a waiter waits for SUBSCRIBE's confirmation before relying on polling alone. */
const SUBSCRIBE_WAIT_MS = 1_000;
const DOWN = new Set(["reconnecting", "close", "end"]);
/** How many notifications Redlock remembers to drop the copies the other members publish. */
const HEARD = 16;

/** A waiter of this process (the core's poller), registered by channel. */
interface Waiter {
  readonly owner: string;
  readonly mode: WireMode;
  readonly limit: number;
  wake(): void;
}

interface Channel {
  /** Resolves true once the server confirmed the subscription, false when it could not in time. */
  confirmed: Promise<boolean>;
  /** SUBSCRIBE failed: the next waiter sends it again. */
  failed: boolean;
  linger: NodeJS.Timeout | undefined;
}

/**
 * Release notifications for the waiters of one backend instance: who waits
 * for which channel (a `WakeRegistry`), and one subscriber connection per
 * server (Redlock: per member; each publishes every release, and the first
 * copy wakes). A channel is subscribed while it has waiters, and a moment
 * longer.
 */
export class Notifications {
  readonly #servers: readonly Subscriber[];
  readonly #heard: string[] = [];
  readonly #waiters = new WakeRegistry<Waiter>({
    first: (channel) => {
      for (const server of this.#servers) server.start(channel);
    },
    last: (channel) => {
      for (const server of this.#servers) server.stop(channel);
    },
  });

  constructor(connections: readonly Connection[]) {
    this.#servers = connections.map((connection) => new Subscriber(connection, this));
  }

  /**
   * Registers a waiter for `request` and resolves once one server confirmed
   * the subscription (or none could in time: polling covers meanwhile).
   */
  async subscribe(request: LockRequest, onChange: () => void): Promise<() => void> {
    const channel = keyLayout(request.digest).channel;
    const waiter = { owner: request.owner, mode: wireMode(request), limit: request.limit };
    const remove = this.#waiters.add(channel, { ...waiter, wake: onChange });
    const confirmed = this.#servers.map((s) =>
      s.confirmed(channel).then((ok) => ok || Promise.reject()),
    );
    await Promise.any(confirmed).catch(() => undefined);
    return remove;
  }

  /** Closes the subscriber connections without waiting for a server that stopped answering. */
  async close(): Promise<void> {
    await Promise.all(this.#servers.map((server) => server.close()));
  }

  /**
   * @internal A notification on `channel` (its name without the client's
   * keyPrefix), heard once (Redlock: each member publishes every release).
   * It wakes the waiters it concerns. Waking every waiter would cost one
   * Redis command per waiter per handoff (a thundering herd); instead, by the
   * payload's first letter:
   *
   * - `x`, the key is free (the exclusive holder, or the last shared or
   *   semaphore holder, left): every shared waiter (they can all enter
   *   together) and the first other waiter (for a semaphore, as many as its limit);
   * - `s`, one semaphore slot freed: the first semaphore waiter;
   * - `o` + head (fair mode): only the waiter at the head of the server's
   *   queue, or every waiter of the key when the head is shared or a semaphore slot.
   *
   * A waiter that tried and lost sleeps until the next release: the winner
   * will release too. The core's bounded polling covers holders that crash and
   * notifications that were missed.
   */
  heard(channel: string, payload: string): void {
    const id = `${channel} ${payload}`;
    if (this.#servers.length > 1) {
      if (this.#heard.includes(id)) return;
      if (this.#heard.push(id) > HEARD) this.#heard.shift();
    }
    this.#waiters.wake(channel, (all) => {
      const kind = payload[0];
      if (kind === "o") {
        const head = payload.slice(1);
        if (head[0] !== "x") return all;
        return all.filter((w) => w.mode + w.owner.slice(0, head.length - 1) === head);
      }
      const slots = all.filter((w) => w.mode === "s");
      if (kind === "s") return slots.slice(0, 1);
      const first = all.find((w) => w.mode !== "r");
      const others = first?.mode === "s" ? slots.slice(0, first.limit) : first ? [first] : [];
      return [...all.filter((w) => w.mode === "r"), ...others];
    });
  }

  /** @internal A subscriber reconnected: notifications may have been missed. */
  resync(): void {
    this.#waiters.wakeAll();
  }
}

/**
 * The subscriber connection of one server (or Cluster), created on first use
 * by duplicating the client. On Cluster it uses sharded pub/sub (SSUBSCRIBE,
 * Redis 7): ioredis keeps one subscriber per master.
 */
class Subscriber {
  readonly #connection: Connection;
  readonly #notifications: Notifications;
  readonly #channels = new Map<string, Channel>();
  #client: Redis | Cluster | undefined;
  #closed = false;

  constructor(connection: Connection, notifications: Notifications) {
    this.#connection = connection;
    this.#notifications = notifications;
  }

  /** Subscribes to `channel` (or keeps a lingering subscription). */
  start(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry !== undefined) {
      clearTimeout(entry.linger);
      entry.linger = undefined;
    } else if (!this.#closed) {
      const created: Channel = {
        confirmed: Promise.resolve(false),
        failed: false,
        linger: undefined,
      };
      this.#channels.set(channel, created);
      this.#subscribe(channel, created);
    }
  }

  /**
   * Resolves true once `channel` is subscribed, false when that could not be
   * confirmed in time (the subscription still takes effect when the server is
   * back; meanwhile polling covers).
   */
  confirmed(channel: string): Promise<boolean> {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return Promise.resolve(false);
    if (entry.failed) this.#subscribe(channel, entry);
    return entry.confirmed;
  }

  /** Unsubscribes from `channel` shortly, unless a waiter starts it again meanwhile. */
  stop(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    entry.linger = setTimeout(() => {
      this.#channels.delete(channel);
      const client = this.#client;
      const sent = this.#connection.isCluster
        ? (client as Cluster).sunsubscribe(channel)
        : (client as Redis).unsubscribe(this.#connection.keyPrefix + channel);
      sent.catch(() => undefined);
    }, LINGER_MS);
    entry.linger.unref();
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const entry of this.#channels.values()) clearTimeout(entry.linger);
    this.#channels.clear();
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) await shutDown(client);
  }

  #subscriber(): Redis | Cluster {
    if (this.#client !== undefined) return this.#client;
    const source = this.#connection.client;
    const prefix = this.#connection.keyPrefix;
    const onMessage = (channel: string, payload: string): void =>
      this.#notifications.heard(channel.slice(prefix.length), payload);
    let client: Redis | Cluster;
    if (this.#connection.isCluster) {
      const cluster = source as Cluster;
      client = cluster.duplicate([], {
        shardedSubscribers: true,
        lazyConnect: false,
        enableOfflineQueue: true,
        redisOptions: { ...cluster.options.redisOptions, disconnectTimeout: DISCONNECT_WAIT_MS },
      });
      client.on("smessage", onMessage);
    } else {
      // Subscriptions are not lock commands: queueing and resubscribing them on reconnect is wanted.
      client = (source as Redis).duplicate({
        lazyConnect: false,
        enableOfflineQueue: true,
        autoResubscribe: true,
        maxRetriesPerRequest: null,
        disconnectTimeout: DISCONNECT_WAIT_MS,
      });
      client.on("message", onMessage);
    }
    client.on("error", () => undefined);
    let first = true;
    client.on("ready", () => {
      if (!first) this.#notifications.resync();
      first = false;
    });
    this.#client = client;
    return client;
  }

  #subscribe(channel: string, entry: Channel): void {
    const client = this.#subscriber();
    const sent = this.#connection.isCluster
      ? (client as Cluster).ssubscribe(channel)
      : (client as Redis).subscribe(this.#connection.keyPrefix + channel);
    entry.failed = false;
    let ok = false;
    const answered = sent.then(
      () => {
        ok = true;
      },
      () => {
        entry.failed = true;
      },
    );
    // Queued while the server is down: it is sent on reconnect, but nobody should wait for that.
    const wait = DOWN.has(client.status) ? 0 : SUBSCRIBE_WAIT_MS;
    entry.confirmed = settledWithin(answered, wait).then(() => ok);
  }
}
