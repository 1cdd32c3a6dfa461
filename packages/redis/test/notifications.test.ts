import { createLocks } from "@locks/core";
import { createRequest, type KeyEvent } from "@locks/core/backend";
import { startRedis, waitFor } from "@locks/testkit";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { redisBackend } from "../src/index.js";
import { freshNamespace, rawClient } from "./helpers.js";

// Its own server: the test kills every pub/sub connection on it.
const server = await startRedis();
afterAll(() => server.stop());

describe("notification health", () => {
  it('a dropped subscriber connection says "unsure", and "changed" once it is back and resubscribed; releases wake it again', async () => {
    const ns = freshNamespace();
    const backend = redisBackend({ url: server.url });
    onTestFinished(() => backend.close());
    const events: KeyEvent[] = [];
    const subscribe = backend.subscribe?.bind(backend);
    if (subscribe === undefined) throw new Error("the redis backend subscribes");
    const stop = await subscribe(createRequest({ key: "k", namespace: ns }), (event) => {
      events.push(event ?? "changed");
    });
    onTestFinished(() => stop());
    expect(events).toEqual([]);

    await rawClient(server.url).client("KILL", "TYPE", "pubsub");
    await waitFor(() => events.includes("changed"), { message: "back and resubscribed" });
    expect(events).toEqual(["unsure", "changed"]);

    // Resubscribed: a release someone waited for is heard.
    const locks = createLocks(redisBackend({ url: server.url }), { namespace: ns });
    onTestFinished(() => locks.close());
    const lease = await locks.acquire("k");
    expect(await locks.tryAcquire("k")).toBeNull();
    await lease.release();
    await waitFor(() => events.length === 3, { message: "the release notification" });
    expect(events[2]).toBe("changed");
  });
});

describe("notification health, server down", () => {
  it('a subscription made while the server is down says "unsure", and "changed" once it is back', async () => {
    const down = await startRedis();
    onTestFinished(() => down.stop());
    const ns = freshNamespace();
    const backend = redisBackend({ url: down.url });
    onTestFinished(() => backend.close());
    await down.kill();
    const events: KeyEvent[] = [];
    const subscribe = backend.subscribe?.bind(backend);
    if (subscribe === undefined) throw new Error("the redis backend subscribes");
    const stop = await subscribe(createRequest({ key: "k", namespace: ns }), (event) => {
      events.push(event ?? "changed");
    });
    onTestFinished(() => stop());
    expect(events[0]).toBe("unsure");
    expect(events).not.toContain("changed");
    await down.restart();
    await waitFor(() => events.includes("changed"), { message: "subscribed once it is back" });
    // Once resubscribed, a release someone waited for is heard.
    const locks = createLocks(redisBackend({ url: down.url }), { namespace: ns });
    onTestFinished(() => locks.close());
    const lease = await locks.acquire("k");
    expect(await locks.tryAcquire("k")).toBeNull();
    const heard = events.length;
    await lease.release();
    await waitFor(() => events.length > heard, { message: "the release notification" });
    expect(events.at(-1)).toBe("changed");
  });
});
