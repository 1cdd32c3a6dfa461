import type { Cluster, Redis } from "ioredis";
import { DISCONNECT_WAIT_MS, shutDown } from "./clients.js";
import type { Connection } from "./connection.js";

/** How long a channel stays subscribed after its last waiter left, so back-to-back waits cost no SUBSCRIBE. */
const LINGER_MS = 2_000;
/** How long a waiter waits for SUBSCRIBE's confirmation before relying on polling alone. */
const SUBSCRIBE_WAIT_MS = 1_000;
const DOWN = new Set(["reconnecting", "close", "end"]);

interface Channel {
  /** Resolves true once the server confirmed the subscription, false when it could not in time. */
  confirmed: Promise<boolean>;
  /** SUBSCRIBE failed: the next waiter sends it again. */
  failed: boolean;
  /** Bounds the wait for the confirmation. */
  timer: NodeJS.Timeout | undefined;
  linger: NodeJS.Timeout | undefined;
}

/**
 * The subscriber connection of one server (or Cluster), created on first use
 * by duplicating the client, and shared by every waiter of every key: the
 * backend's `WakeRegistry` starts a channel when it gets its first waiter and
 * stops it when the last one left (after a moment). On Cluster it uses
 * sharded pub/sub (SSUBSCRIBE, Redis 7): ioredis keeps one subscriber per master.
 */
export class Notifier {
  readonly #connection: Connection;
  readonly #onMessage: (channel: string, payload: string) => void;
  readonly #onResync: () => void;
  readonly #channels = new Map<string, Channel>();
  #subscriber: Redis | Cluster | undefined;
  #closed = false;

  /**
   * @param onMessage called with the channel's name (without the client's keyPrefix).
   * @param onResync called when the subscriber reconnected: messages may have been missed.
   */
  constructor(
    connection: Connection,
    onMessage: (channel: string, payload: string) => void,
    onResync: () => void,
  ) {
    this.#connection = connection;
    this.#onMessage = onMessage;
    this.#onResync = onResync;
  }

  /** Subscribes to `channel` (or keeps a lingering subscription). */
  start(channel: string): void {
    if (this.#closed) return;
    const entry = this.#channels.get(channel);
    if (entry === undefined) {
      const created: Channel = {
        confirmed: Promise.resolve(false),
        failed: false,
        timer: undefined,
        linger: undefined,
      };
      this.#channels.set(channel, created);
      this.#subscribe(channel, created);
      return;
    }
    clearTimeout(entry.linger);
    entry.linger = undefined;
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
    if (entry === undefined || this.#closed) return;
    entry.linger = setTimeout(() => {
      this.#channels.delete(channel);
      clearTimeout(entry.timer);
      const client = this.#subscriber;
      const sent = this.#connection.isCluster
        ? (client as Cluster).sunsubscribe(channel)
        : (client as Redis).unsubscribe(this.#connection.keyPrefix + channel);
      sent.catch(() => undefined);
    }, LINGER_MS);
    entry.linger.unref();
  }

  /** Closes the subscriber connection without waiting for a server that stopped answering. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const entry of this.#channels.values()) {
      clearTimeout(entry.linger);
      clearTimeout(entry.timer);
    }
    this.#channels.clear();
    const subscriber = this.#subscriber;
    this.#subscriber = undefined;
    if (subscriber === undefined) return;
    subscriber.removeAllListeners("ready");
    await shutDown(subscriber);
  }

  #client(): Redis | Cluster {
    if (this.#subscriber !== undefined) return this.#subscriber;
    const source = this.#connection.client;
    const prefix = this.#connection.keyPrefix;
    const onMessage = (channel: string, payload: string): void =>
      this.#onMessage(channel.slice(prefix.length), payload);
    let subscriber: Redis | Cluster;
    if (this.#connection.isCluster) {
      const cluster = source as Cluster;
      subscriber = cluster.duplicate([], {
        shardedSubscribers: true,
        lazyConnect: false,
        enableOfflineQueue: true,
        redisOptions: { ...cluster.options.redisOptions, disconnectTimeout: DISCONNECT_WAIT_MS },
      });
      subscriber.on("smessage", onMessage);
    } else {
      // Subscriptions are not lock commands: queueing and resubscribing them on reconnect is wanted.
      subscriber = (source as Redis).duplicate({
        lazyConnect: false,
        enableOfflineQueue: true,
        autoResubscribe: true,
        maxRetriesPerRequest: null,
        disconnectTimeout: DISCONNECT_WAIT_MS,
      });
      subscriber.on("message", onMessage);
    }
    subscriber.on("error", () => undefined);
    let first = true;
    subscriber.on("ready", () => {
      if (!first) this.#onResync();
      first = false;
    });
    this.#subscriber = subscriber;
    return subscriber;
  }

  #subscribe(channel: string, entry: Channel): void {
    const client = this.#client();
    const sent = this.#connection.isCluster
      ? (client as Cluster).ssubscribe(channel)
      : (client as Redis).subscribe(this.#connection.keyPrefix + channel);
    entry.failed = false;
    clearTimeout(entry.timer);
    entry.confirmed = new Promise<boolean>((resolve) => {
      // Queued while the server is down: it is sent on reconnect, but nobody should wait for that.
      const wait = DOWN.has(client.status) ? 0 : SUBSCRIBE_WAIT_MS;
      entry.timer = setTimeout(() => resolve(false), wait).unref();
      sent.then(
        () => resolve(true),
        () => {
          entry.failed = true;
          resolve(false);
        },
      );
    }).finally(() => clearTimeout(entry.timer));
  }
}
