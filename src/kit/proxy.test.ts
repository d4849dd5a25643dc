/** The chaos proxy against the real RabbitMQ: it must really hold confirms and really cut. */
import amqp from "amqplib";
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { amqpHostPort, loadConfig } from "../config.ts";
import { ChaosProxy, isConfirm } from "./proxy.ts";

const config = loadConfig();
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

async function setup() {
  const proxy = await ChaosProxy.start(amqpHostPort(config.amqpUrl));
  cleanups.push(() => proxy.close());
  const conn = await amqp.connect(proxy.urlFor(config.amqpUrl));
  conn.on("error", () => {});
  cleanups.push(() => conn.close());
  const queue = `msglab.test.proxy.${randomUUID()}`;
  const admin = await amqp.connect(config.amqpUrl);
  cleanups.push(async () => {
    const ch = await admin.createChannel();
    await ch.deleteQueue(queue);
    await admin.close();
  });
  return { proxy, conn, queue, admin };
}

describe("ChaosProxy", () => {
  it("holds the broker's confirms while declares and publishes flow, then releases them", async () => {
    const { proxy, conn, queue, admin } = await setup();
    proxy.hold("toClient", isConfirm);
    const ch = await conn.createConfirmChannel(); // channel.open-ok must not be held
    await ch.assertQueue(queue, { durable: false }); // neither may queue.declare-ok
    let confirmed = false;
    ch.sendToQueue(queue, Buffer.from("x"), {}, () => (confirmed = true));
    const waiting = ch.waitForConfirms().then(() => (confirmed = true));
    // The message reached the broker (seen from outside) but its confirm is held.
    const adminCh = await admin.createChannel();
    for (let i = 0; i < 100 && (await adminCh.checkQueue(queue)).messageCount < 1; i++) await new Promise((r) => setTimeout(r, 10));
    expect((await adminCh.checkQueue(queue)).messageCount).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(confirmed).toBe(false);
    expect(proxy.heldCount).toBe(1);
    proxy.release();
    await waiting;
    expect(confirmed).toBe(true);
  });

  it("cut() surfaces as a connection error in amqplib", async () => {
    const { proxy, conn } = await setup();
    const closed = new Promise<Error | undefined>((resolve) => conn.once("close", resolve));
    const errored = new Promise<Error>((resolve) => conn.once("error", resolve));
    proxy.cut();
    const err = await errored;
    expect(err).toBeInstanceOf(Error);
    await closed;
    // New connections work again afterwards.
    const again = await amqp.connect(proxy.urlFor(config.amqpUrl));
    await again.close();
  });

  it("latency() delays every frame", async () => {
    const { proxy, conn } = await setup();
    proxy.latency(150);
    const started = performance.now();
    const ch = await conn.createChannel(); // channel.open and channel.open-ok each wait 150 ms
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    proxy.latency(0);
    await ch.close();
  });

  it("pause() stops traffic and resume() lets it through", async () => {
    const { proxy, conn } = await setup();
    const ch = await conn.createChannel();
    proxy.pause();
    let done = false;
    const declared = ch.assertQueue("", { exclusive: true }).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 150));
    expect(done).toBe(false);
    proxy.resume();
    await declared;
    expect(done).toBe(true);
  });
});
