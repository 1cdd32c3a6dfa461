import { connect, createServer, type Socket } from "node:net";
import { performance } from "node:perf_hooks";

/** A TCP proxy on 127.0.0.1 that injects network faults between a client and a server. */
export interface TcpProxy {
  readonly host: "127.0.0.1";
  readonly port: number;
  /** The target URL with the proxy's address, when the target was given as a URL. */
  readonly url?: string;
  /** Open client connections. */
  readonly connections: number;
  /** Adds `ms` of latency to every chunk, in both directions (0 turns it off). */
  delay(ms: number): void;
  /**
   * While on, nothing gets through in either direction, bytes or closes;
   * connections stay open and new ones are accepted, like a partition.
   * Turning it off delivers what was held back, in order, as TCP's
   * retransmissions would once a partition heals (a byte stream never loses
   * bytes in its middle), and the closes that happened meanwhile (a FIN as a
   * FIN, an abrupt close as a reset).
   */
  blackhole(on: boolean): void;
  /** Destroys every open connection with a TCP RST, on both sides. */
  resetAll(): void;
  /** Stops listening and resets every connection. */
  close(): Promise<void>;
}

interface Side {
  socket: Socket;
  queue: { due: number; chunk: Buffer }[];
  timer: NodeJS.Timeout | undefined;
  /** The peer sent FIN: end this side once the queue is flushed. */
  ending: boolean;
  /** This side sent FIN during a blackhole: delivered when it ends. */
  endLost: boolean;
  closed: boolean;
}

interface Pair {
  client: Side;
  upstream: Side;
}

function side(socket: Socket): Side {
  return { socket, queue: [], timer: undefined, ending: false, endLost: false, closed: false };
}

function reset(s: Side): void {
  clearTimeout(s.timer);
  s.queue = [];
  if (!s.socket.destroyed) s.socket.resetAndDestroy();
}

/**
 * Starts a proxy to `target`. `target` may be `{ host, port }` or a URL
 * (`redis://…`, `postgresql://user@host:port/db`, `http://…`); for a URL
 * the proxy's `url` is the same URL pointing at the proxy.
 */
export async function startProxy(
  target: { host: string; port: number } | string,
): Promise<TcpProxy> {
  const targetUrl = typeof target === "string" ? new URL(target) : undefined;
  const to = targetUrl
    ? { host: targetUrl.hostname || "127.0.0.1", port: Number(targetUrl.port) }
    : (target as { host: string; port: number });
  if (!Number.isInteger(to.port) || to.port <= 0) {
    throw new RangeError(`startProxy: the target has no port: ${JSON.stringify(target)}`);
  }
  let delayMs = 0;
  let blackholed = false;
  const pairs = new Set<Pair>();

  // Delivers queued chunks in order once they are due; a partition holds them back.
  const flush = (dst: Side) => {
    clearTimeout(dst.timer);
    dst.timer = undefined;
    if (blackholed) return;
    const now = performance.now();
    while (dst.queue.length && dst.queue[0]!.due <= now) {
      const { chunk } = dst.queue.shift()!;
      if (!dst.socket.destroyed) dst.socket.write(chunk);
    }
    if (dst.queue.length) {
      dst.timer = setTimeout(() => flush(dst), Math.max(1, dst.queue[0]!.due - now));
    } else if (dst.ending && !dst.socket.destroyed) {
      dst.socket.end();
    }
  };

  const endSide = (dst: Side) => {
    dst.ending = true;
    if (!dst.timer) flush(dst);
  };

  const forward = (src: Side, dst: Side) => {
    src.socket.on("data", (chunk: Buffer) => {
      if (delayMs === 0 && dst.queue.length === 0 && !blackholed) {
        if (!dst.socket.write(chunk)) {
          src.socket.pause();
          dst.socket.once("drain", () => src.socket.resume());
        }
        return;
      }
      const last = dst.queue.at(-1)?.due ?? 0;
      dst.queue.push({ due: Math.max(performance.now() + delayMs, last), chunk });
      if (!dst.timer && !blackholed) flush(dst);
    });
    src.socket.on("end", () => {
      if (blackholed) src.endLost = true;
      else endSide(dst);
    });
  };

  const onClose = (pair: Pair, closed: Side, other: Side) => {
    closed.closed = true;
    clearTimeout(closed.timer);
    if (pair.client.closed && pair.upstream.closed) {
      pairs.delete(pair);
      return;
    }
    // In a partition the other end learns nothing; see blackhole(false).
    if (!blackholed) {
      if (closed.socket.errored) reset(other);
      else if (!other.ending) endSide(other);
    }
  };

  const server = createServer({ allowHalfOpen: true }, (clientSocket) => {
    const upstreamSocket = connect({ ...to, allowHalfOpen: true });
    const pair: Pair = { client: side(clientSocket), upstream: side(upstreamSocket) };
    pairs.add(pair);
    for (const s of [clientSocket, upstreamSocket]) {
      s.setNoDelay(true);
      s.on("error", () => {});
    }
    forward(pair.client, pair.upstream);
    forward(pair.upstream, pair.client);
    clientSocket.on("close", () => onClose(pair, pair.client, pair.upstream));
    upstreamSocket.on("close", () => onClose(pair, pair.upstream, pair.client));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.unref();
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  let url: string | undefined;
  if (targetUrl) {
    const u = new URL(targetUrl.href);
    u.hostname = "127.0.0.1";
    u.port = String(port);
    url = u.href;
  }

  const resetAll = () => {
    for (const pair of pairs) {
      reset(pair.client);
      reset(pair.upstream);
    }
    pairs.clear();
  };

  let closing: Promise<void> | undefined;
  return {
    host: "127.0.0.1",
    port,
    ...(url !== undefined ? { url } : {}),
    get connections() {
      return pairs.size;
    },
    delay(ms: number) {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay: ms must be >= 0, got ${ms}`);
      delayMs = ms;
    },
    blackhole(on: boolean) {
      blackholed = on;
      if (on) return;
      // The partition heals: what was held back in it reaches the other end
      // now, bytes first, a FIN as a FIN, a connection that died abruptly as a reset.
      for (const pair of [...pairs]) {
        flush(pair.client);
        flush(pair.upstream);
        const { client, upstream } = pair;
        if (
          (client.closed && client.socket.errored) ||
          (upstream.closed && upstream.socket.errored)
        ) {
          reset(client);
          reset(upstream);
          pairs.delete(pair);
          continue;
        }
        for (const [src, dst] of [
          [client, upstream],
          [upstream, client],
        ] as const) {
          if (src.endLost) {
            src.endLost = false;
            endSide(dst);
          }
        }
      }
    },
    resetAll,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        resetAll();
      });
      return closing;
    },
  };
}
