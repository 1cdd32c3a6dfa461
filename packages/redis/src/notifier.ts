import { type KeyEvent, type KeyRef, settledWithin } from "@locks/core/backend";
import type { Cluster, Redis } from "ioredis";
import { DISCONNECT_WAIT_MS, shutDown } from "./clients.js";
import type { Connection } from "./connection.js";
import { keyLayout } from "./layout.js";

/** How long a channel stays subscribed after its last waiter left, so back-to-back waits cost no SUBSCRIBE. */
const LINGER_MS = 2_000;
/** How long a subscription waits for SUBSCRIBE's confirmation before the core polls instead. */
const SUBSCRIBE_WAIT_MS = 1_000;
/**
 * How often an idle subscriber connection is PINGed while it has channels: a
 * PING unanswered by the next one means notifications may be missed (a dead
 * peer that never sent a reset looks connected).
 */
const HEARTBEAT_MS = 5_000;
const DOWN = new Set(["reconnecting", "close", "end"]);
/** How many notifications Redlock remembers to drop the copies the other members publish. */
const HEARD = 16;

type Listener = (event?: KeyEvent) => void;

/**
 * Which notifications concern this instance's waiters: fair mode wakes a
 * client only when the head of the queue is one of its waiters.
 */
export type NotificationFilter = (channel: string, payload: string) => boolean;

interface Channel {
  /** Resolves true once the server confirmed the subscription, false when it could not in time. */
  confirmed: Promise<boolean>;
  /** Resolves true once the server confirmed the subscription, false when SUBSCRIBE failed. */
  answered: Promise<boolean>;
  /** SUBSCRIBE failed: the next subscription sends it again. */
  failed: boolean;
  linger: NodeJS.Timeout | undefined;
}

/**
 * Release notifications for the waits of one backend instance: the core
 * subscribes once per key per client, and each channel has one subscriber
 * connection per server (Redlock: per member; each publishes every release,
 * and the first copy wakes). A channel is subscribed while someone waits for
 * its key, and a moment longer.
 *
 * Health: while a subscriber connection is down, or its heartbeat PING went
 * unanswered, every listener hears "unsure" (the core polls); once it is back
 * and resubscribed, "changed" (anything may have been missed meanwhile).
 */
export class Notifications {
  readonly #servers: readonly Subscriber[];
  readonly #filter: NotificationFilter | undefined;
  readonly #heard: string[] = [];
  readonly #listeners = new Map<string, Set<Listener>>();
  /** Subscriber connections that may be missing notifications now. */
  #unhealthy = 0;

  constructor(connections: readonly Connection[], filter?: NotificationFilter) {
    this.#servers = connections.map((connection) => new Subscriber(connection, this));
    this.#filter = filter;
  }

  /**
   * Listens for changes of `key`; resolves once one server confirmed the
   * subscription, or none could in time (the listener then hears "unsure").
   */
  async subscribe(key: KeyRef, onChange: Listener): Promise<() => void> {
    const channel = keyLayout(key).channel;
    let listeners = this.#listeners.get(channel);
    if (listeners === undefined) {
      listeners = new Set();
      this.#listeners.set(channel, listeners);
      for (const server of this.#servers) server.start(channel);
    }
    listeners.add(onChange);
    const confirmed = this.#servers.map((s) =>
      s.confirmed(channel).then((ok) => ok || Promise.reject()),
    );
    const ok = await Promise.any(confirmed).then(
      () => true,
      () => false,
    );
    if (!ok || this.#unhealthy > 0) onChange("unsure");
    if (!ok) {
      // Confirmed later after all (a slow first connection): from then on nothing is missed.
      const later = this.#servers.map((s) =>
        s.answered(channel).then((yes) => yes || Promise.reject()),
      );
      void Promise.any(later).then(
        () => {
          if (this.#listeners.get(channel)?.has(onChange) === true) this.#tell(onChange);
        },
        () => undefined,
      );
    }
    return () => this.#remove(channel, onChange);
  }

  /** Whether waiters of this instance listen on `channel` (the acquire script's mark). */
  listening(channel: string): boolean {
    return this.#listeners.has(channel);
  }

  /** Closes the subscriber connections without waiting for a server that stopped answering. */
  async close(): Promise<void> {
    await Promise.all(this.#servers.map((server) => server.close()));
  }

  /**
   * @internal A notification on `channel` (its name without the client's
   * keyPrefix), heard once (Redlock: each member publishes every release),
   * for this instance's waiters unless the filter says otherwise. The core
   * decides which of its waiters attempts.
   */
  heard(channel: string, payload: string): void {
    if (this.#servers.length > 1) {
      const id = `${channel} ${payload}`;
      if (this.#heard.includes(id)) return;
      if (this.#heard.push(id) > HEARD) this.#heard.shift();
    }
    const listeners = this.#listeners.get(channel);
    if (listeners === undefined) return;
    if (this.#filter !== undefined && !this.#filter(channel, payload)) return;
    for (const listener of [...listeners]) this.#tell(listener);
  }

  /** @internal A subscriber connection may be missing notifications (down, or silent). */
  unsure(): void {
    if (this.#unhealthy++ > 0) return;
    for (const listener of this.#all()) listener("unsure");
  }

  /** @internal A subscriber connection that was unsure is resubscribed: anything may have been missed. */
  recovered(): void {
    this.#unhealthy = Math.max(0, this.#unhealthy - 1);
    for (const listener of this.#all()) this.#tell(listener);
  }

  /** "changed", and "unsure" again while another subscriber connection may still miss some. */
  #tell(listener: Listener): void {
    listener("changed");
    if (this.#unhealthy > 0) listener("unsure");
  }

  #all(): Listener[] {
    return [...this.#listeners.values()].flatMap((set) => [...set]);
  }

  #remove(channel: string, listener: Listener): void {
    const listeners = this.#listeners.get(channel);
    if (listeners === undefined || !listeners.delete(listener) || listeners.size > 0) return;
    this.#listeners.delete(channel);
    for (const server of this.#servers) server.stop(channel);
  }
}

/**
 * The subscriber connection of one server (or Cluster), created on first use
 * by duplicating the client. On Cluster it uses sharded pub/sub (SSUBSCRIBE,
 * Redis 7): ioredis keeps one subscriber per master, and a reconnect counts
 * as a change (no heartbeat: the core's safety poll bounds a missed one).
 */
class Subscriber {
  readonly #connection: Connection;
  readonly #notifications: Notifications;
  readonly #channels = new Map<string, Channel>();
  #client: Redis | Cluster | undefined;
  #closed = false;
  /** One server: PINGs the connection while it has channels. */
  #heartbeat: NodeJS.Timeout | undefined;
  /** A heartbeat PING is unanswered. */
  #pinging = false;
  /** This connection told the listeners "unsure" and has not recovered yet. */
  #unsure = false;

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
        answered: Promise.resolve(false),
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

  /** Resolves true once `channel` is subscribed, however long that takes; false when SUBSCRIBE failed. */
  answered(channel: string): Promise<boolean> {
    return this.#channels.get(channel)?.answered ?? Promise.resolve(false);
  }

  /** Unsubscribes from `channel` shortly, unless a waiter starts it again meanwhile. */
  stop(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    entry.linger = setTimeout(() => {
      this.#channels.delete(channel);
      if (this.#channels.size === 0) this.#stopHeartbeat();
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
    this.#stopHeartbeat();
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
      let first = true;
      client.on("ready", () => {
        if (!first) this.#notifications.recovered();
        first = false;
      });
    } else {
      // Subscriptions are not lock commands: queueing and resubscribing them on reconnect is wanted.
      const redis = (source as Redis).duplicate({
        lazyConnect: false,
        enableOfflineQueue: true,
        autoResubscribe: true,
        maxRetriesPerRequest: null,
        disconnectTimeout: DISCONNECT_WAIT_MS,
      });
      redis.on("message", onMessage);
      redis.on("close", () => this.#setUnsure());
      // ioredis sends the resubscriptions before "ready" is emitted: a PING answered after them
      // proves them in place.
      redis.on("ready", () => {
        if (this.#unsure) this.#ping(redis);
      });
      client = redis;
    }
    client.on("error", () => undefined);
    this.#client = client;
    return client;
  }

  #subscribe(channel: string, entry: Channel): void {
    const client = this.#subscriber();
    const sent = this.#connection.isCluster
      ? (client as Cluster).ssubscribe(channel)
      : (client as Redis).subscribe(this.#connection.keyPrefix + channel);
    if (!this.#connection.isCluster) this.#startHeartbeat(client as Redis);
    entry.failed = false;
    let ok = false;
    const answered = sent.then(
      () => {
        ok = true;
        return true;
      },
      () => {
        entry.failed = true;
        return false;
      },
    );
    entry.answered = answered;
    // Queued while the server is down: it is sent on reconnect, but nobody should wait for that.
    const wait = DOWN.has(client.status) ? 0 : SUBSCRIBE_WAIT_MS;
    entry.confirmed = settledWithin(answered, wait).then(() => ok);
  }

  #startHeartbeat(client: Redis): void {
    if (this.#heartbeat !== undefined) return;
    this.#heartbeat = setInterval(() => {
      // The previous PING is still unanswered: the connection may be dead without knowing it.
      if (this.#pinging) this.#setUnsure();
      else if (client.status === "ready") this.#ping(client);
    }, HEARTBEAT_MS);
    this.#heartbeat.unref();
  }

  #stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#pinging = false;
  }

  #ping(client: Redis): void {
    if (this.#pinging) return;
    this.#pinging = true;
    client.ping().then(
      () => {
        this.#pinging = false;
        if (!this.#unsure || this.#closed || client.status !== "ready") return;
        this.#unsure = false;
        this.#notifications.recovered();
      },
      () => {
        this.#pinging = false;
      },
    );
  }

  #setUnsure(): void {
    if (this.#unsure || this.#closed) return;
    this.#unsure = true;
    this.#notifications.unsure();
  }
}
