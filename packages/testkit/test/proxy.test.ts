import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { redisCommand, startProxy, startRedis, type TcpProxy, waitFor } from "../src/index.js";

/** An echo server that also counts how many connections it has open. */
let echo: Server;
let echoPort: number;
const serverSockets = new Set<Socket>();

beforeAll(async () => {
  echo = createServer((socket) => {
    serverSockets.add(socket);
    socket.on("close", () => serverSockets.delete(socket));
    socket.on("error", () => {});
    socket.pipe(socket);
  });
  echo.listen(0, "127.0.0.1");
  await once(echo, "listening");
  echoPort = (echo.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((resolve) => echo.close(() => resolve())));

const proxies: TcpProxy[] = [];
const clients: Socket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function proxy(): Promise<TcpProxy> {
  const p = await startProxy({ host: "127.0.0.1", port: echoPort });
  proxies.push(p);
  return p;
}

async function client(port: number): Promise<Socket> {
  const socket = connect({ host: "127.0.0.1", port });
  clients.push(socket);
  socket.on("error", () => {});
  await once(socket, "connect");
  return socket;
}

/** Sends `text`, resolves with the echo (rejects after timeoutMs). */
function roundTrip(socket: Socket, text: string, timeoutMs = 2_000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let got = "";
    const timer = setTimeout(() => {
      socket.off("data", onData);
      reject(new Error(`no echo within ${timeoutMs} ms (got ${JSON.stringify(got)})`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      got += chunk.toString();
      if (got.length >= text.length) {
        clearTimeout(timer);
        socket.off("data", onData);
        resolve(got);
      }
    };
    socket.on("data", onData);
    socket.write(text);
  });
}

describe("startProxy", () => {
  it("forwards both ways on 127.0.0.1, large payloads intact", async () => {
    const p = await proxy();
    expect(p.host).toBe("127.0.0.1");
    expect(p.url).toBeUndefined();
    const socket = await client(p.port);
    expect(await roundTrip(socket, "hello")).toBe("hello");
    const big = "x".repeat(4 * 1024 * 1024);
    expect((await roundTrip(socket, big, 10_000)).length).toBe(big.length);
    expect(p.connections).toBe(1);
  });

  it("delay() adds latency in both directions, in order", async () => {
    const p = await proxy();
    const socket = await client(p.port);
    p.delay(150);
    const start = performance.now();
    const replies = await Promise.all([roundTrip(socket, "ab"), roundTrip(socket, "c")]);
    const elapsed = performance.now() - start;
    expect(replies[0]!.startsWith("ab")).toBe(true);
    expect(elapsed).toBeGreaterThanOrEqual(290);
    p.delay(0);
    const fast = performance.now();
    await roundTrip(socket, "quick");
    expect(performance.now() - fast).toBeLessThan(150);
  });

  it("blackhole() holds bytes back, keeps connections open, and delivers them in order when it heals", async () => {
    const p = await proxy();
    const socket = await client(p.port);
    expect(await roundTrip(socket, "before")).toBe("before");
    p.blackhole(true);
    await expect(roundTrip(socket, "held", 300)).rejects.toThrow(/no echo/);
    expect(socket.destroyed).toBe(false);
    expect(p.connections).toBe(1);
    // New connections are accepted but hear nothing either.
    const other = await client(p.port);
    await expect(roundTrip(other, "x", 200)).rejects.toThrow(/no echo/);
    p.blackhole(false);
    // As TCP's retransmissions would: nothing is lost from the middle of a stream.
    expect(await roundTrip(socket, "after")).toBe("heldafter");
    expect(await roundTrip(other, "yz")).toBe("xyz");
  });

  it("a close during a blackhole stays unseen until it ends, then resets", async () => {
    const p = await proxy();
    const socket = await client(p.port);
    await roundTrip(socket, "hi");
    const before = serverSockets.size;
    p.blackhole(true);
    socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(serverSockets.size).toBe(before);
    p.blackhole(false);
    await waitFor(() => serverSockets.size === before - 1, { message: "server side closed" });
  });

  it("resetAll() destroys open connections with ECONNRESET; new ones work", async () => {
    const p = await proxy();
    const socket = await client(p.port);
    await roundTrip(socket, "hi");
    const errored = new Promise<NodeJS.ErrnoException>((resolve) => socket.once("error", resolve));
    p.resetAll();
    expect((await errored).code).toBe("ECONNRESET");
    expect(p.connections).toBe(0);
    const again = await client(p.port);
    expect(await roundTrip(again, "again")).toBe("again");
  });

  it("an unreachable target resets the client", async () => {
    const closedPort = await (async () => {
      const s = createServer().listen(0, "127.0.0.1");
      await once(s, "listening");
      const port = (s.address() as { port: number }).port;
      await new Promise<void>((resolve) => s.close(() => resolve()));
      return port;
    })();
    const p = await startProxy({ host: "127.0.0.1", port: closedPort });
    proxies.push(p);
    const socket = await client(p.port);
    const closed = new Promise<boolean>((resolve) => socket.once("close", resolve));
    expect(await closed).toBe(true); // hadError: reset
  });

  it("takes a URL and gives the proxied URL (redis through the proxy)", async () => {
    const redis = await startRedis();
    try {
      const p = await startProxy(redis.url);
      proxies.push(p);
      expect(p.url).toBe(`redis://127.0.0.1:${p.port}`);
      expect(await redisCommand(p.url!, ["PING"])).toBe("PONG");
      p.blackhole(true);
      await expect(redisCommand(p.url!, ["PING"], { timeoutMs: 200 })).rejects.toThrow();
      p.blackhole(false);
      await p.close();
      await p.close();
      await expect(redisCommand(p.url!, ["PING"], { timeoutMs: 500 })).rejects.toThrow();
    } finally {
      await redis.stop();
    }
  });
});
