import type { Cluster, Redis } from "ioredis";
import { DISCONNECT_WAIT_MS, shutDown } from "./clients.js";
import type { Connection } from "./connection.js";

/** How long a channel stays subscribed after its last waiter left, so back-to-back waits cost no SUBSCRIBE. */
const LINGER_MS = 2_000;
/** How long a waiter waits for SUBSCRIBE's confirmation before relying on polling alone. */
const SUBSCRIBE_WAIT_MS = 1_000;
const DOWN = new Set(["reconnecting", "close", "end"]);

interface Channel {
  refs: number;
  /** The last SUBSCRIBE failed: the next waiter tries again. */
  failed: boolean;
  /** Resolves once the server confirmed the subscription (or gave up: polling covers). */
  subscribed: Promise<boolean>;
  linger: NodeJS.Timeout | undefined;
  /** Bounds the wait for SUBSCRIBE's confirmation. */
  confirm: NodeJS.Timeout | undefined;
}

/**
 * One subscriber connection per backend instance, created on first use by
 * duplicating the client, and shared by every waiter of every key. A channel
 * is subscribed once however many waiters it has (reference counted), and
 * unsubscribed a moment after the last one left. On Cluster it uses sharded
 * pub/sub (SSUBSCRIBE, Redis 7): ioredis keeps one subscriber per master.
 */
export class Notifier {
  readonly #connection: Connection;
  readonly #onMessage: (channel: string, payload: string) => void;
  readonly #onResync: () => void;
  readonly #channels = new Map<string, Channel>();
  #subscriber: Redis | Cluster | undefined;
  #closed = false;

  /**
   * @param onMessage called with the channel name as the server reports it.
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

  /** The name under which the server publishes (and reports) `channel`. */
  serverName(channel: string): string {
    return this.#connection.keyPrefix + channel;
  }

  /**
   * Adds a reference to `channel`; resolves true once subscribed, false when
   * that could not be confirmed in time (the subscription still takes effect
   * when the server is back; meanwhile polling covers).
   */
  retain(channel: string): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    const existing = this.#channels.get(channel);
    if (existing !== undefined) {
      existing.refs++;
      if (existing.linger !== undefined) clearTimeout(existing.linger);
      existing.linger = undefined;
      if (existing.failed) {
        existing.failed = false;
        existing.subscribed = this.#subscribe(channel, existing);
      }
      return existing.subscribed;
    }
    const entry: Channel = {
      refs: 1,
      failed: false,
      subscribed: Promise.resolve(false),
      linger: undefined,
      confirm: undefined,
    };
    entry.subscribed = this.#subscribe(channel, entry);
    this.#channels.set(channel, entry);
    return entry.subscribed;
  }

  /** Drops a reference; the channel is unsubscribed shortly after the last one. */
  release(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined || --entry.refs > 0) return;
    entry.linger = setTimeout(() => {
      if (entry.refs > 0 || this.#channels.get(channel) !== entry) return;
      this.#channels.delete(channel);
      this.#unsubscribe(channel);
    }, LINGER_MS);
    entry.linger.unref();
  }

  /** Closes the subscriber connection without waiting for a server that stopped answering. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const entry of this.#channels.values()) {
      clearTimeout(entry.linger);
      clearTimeout(entry.confirm);
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
    let subscriber: Redis | Cluster;
    if (this.#connection.isCluster) {
      const cluster = source as Cluster;
      subscriber = cluster.duplicate([], {
        shardedSubscribers: true,
        lazyConnect: false,
        enableOfflineQueue: true,
        redisOptions: { ...cluster.options.redisOptions, disconnectTimeout: DISCONNECT_WAIT_MS },
      });
      subscriber.on("smessage", this.#onMessage);
    } else {
      // Subscriptions are not lock commands: queueing and resubscribing them on reconnect is wanted.
      subscriber = (source as Redis).duplicate({
        lazyConnect: false,
        enableOfflineQueue: true,
        autoResubscribe: true,
        maxRetriesPerRequest: null,
        disconnectTimeout: DISCONNECT_WAIT_MS,
      });
      subscriber.on("message", this.#onMessage);
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

  #subscribe(channel: string, entry: Channel): Promise<boolean> {
    const client = this.#client();
    const sent = this.#connection.isCluster
      ? (client as Cluster).ssubscribe(channel)
      : (client as Redis).subscribe(this.serverName(channel));
    return new Promise<boolean>((resolve) => {
      const settle = (confirmed: boolean): void => {
        clearTimeout(entry.confirm);
        entry.confirm = undefined;
        if (!confirmed) entry.failed = true;
        resolve(confirmed);
      };
      // Queued while the server is down: it is sent on reconnect, but nobody should wait for that.
      clearTimeout(entry.confirm);
      entry.confirm = setTimeout(
        () => {
          entry.confirm = undefined;
          resolve(false);
        },
        DOWN.has(client.status) ? 0 : SUBSCRIBE_WAIT_MS,
      );
      entry.confirm.unref();
      sent.then(
        () => settle(true),
        () => settle(false),
      );
    });
  }

  #unsubscribe(channel: string): void {
    const client = this.#subscriber;
    if (client === undefined || this.#closed) return;
    const sent = this.#connection.isCluster
      ? (client as Cluster).sunsubscribe(channel)
      : (client as Redis).unsubscribe(this.serverName(channel));
    sent.catch(() => undefined);
  }
}
