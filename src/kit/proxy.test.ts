/** The chaos proxy against the real RabbitMQ: it must really hold confirms and really cut. */
import amqp from "amqplib";
import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { amqpHostPort, loadConfig } from "../config.ts";
import { ChaosProxy, isConfirm } from "./proxy.ts";
import { decodeMethod } from "./amqp-methods.ts";
import { WireDeliveries } from "./amqp-deliveries.ts";

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
  // A test may have killed the connection's socket, and then close() never settles.
  cleanups.push(() => Promise.race([conn.close(), new Promise((r) => setTimeout(r, 500))]));
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

  /** The socket under an amqplib connection: destroying it is what a SIGKILL does to the client. */
  const socketOf = (conn: amqp.ChannelModel) => (conn as unknown as { connection: { stream: { destroy(): void } } }).connection.stream;

  it("stopAt() keeps a frame and everything after it from the broker; the client dying drops them", async () => {
    const { proxy, conn, queue, admin } = await setup();
    const wire = new WireDeliveries(proxy);
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { durable: false });
    for (const m of ["a", "b"]) ch.sendToQueue(queue, Buffer.from(m), { messageId: m });
    // Stop at the ack that settles "b": "a"'s ack, sent first, goes through.
    const gate = proxy.stopAt("toBroker", (f) => wire.settledBy(f).some((d) => d.messageId === "b"));
    let died = false;
    gate.onStop(() => {
      socketOf(conn).destroy();
      died = true;
    });
    await ch.consume(queue, (msg) => msg && ch.ack(msg), { noAck: false });
    await gate.stopped;
    expect(died).toBe(true);
    const adminCh = await admin.createChannel();
    let left = -1;
    for (let i = 0; i < 100 && left !== 1; i++) {
      left = (await adminCh.checkQueue(queue)).messageCount;
      if (left !== 1) await new Promise((r) => setTimeout(r, 20));
    }
    expect(left).toBe(1);
    const back = await adminCh.get(queue, { noAck: true });
    expect(back && back.properties.messageId).toBe("b");
  });

  it("stopAt() with moveTo() lets deliveries through one at a time, content and all", async () => {
    const { proxy, conn, queue } = await setup();
    const wire = new WireDeliveries(proxy);
    const gate = proxy.stopAt("toClient", (f) => wire.deliveryOf(f)?.index === 1);
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { durable: false });
    for (const m of ["a", "b", "c"]) ch.sendToQueue(queue, Buffer.from(`body-${m}`), { messageId: m });
    const got: string[] = [];
    await ch.consume(queue, (msg) => msg && got.push(`${msg.properties.messageId}:${msg.content.toString()}`), { noAck: true });
    const until = async (cond: () => boolean) => {
      for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    };
    await until(() => wire.deliveries.length === 3);
    expect(got).toEqual([]);
    expect(wire.deliveries.map((d) => d.messageId)).toEqual(["a", "b", "c"]);
    gate.moveTo((f) => wire.deliveryOf(f)?.index === 3);
    await until(() => got.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual(["a:body-a", "b:body-b"]);
    expect(gate.heldCount).toBeGreaterThan(0);
    gate.open();
    await until(() => got.length === 3);
    expect(got).toEqual(["a:body-a", "b:body-b", "c:body-c"]);
  });

  it("what a client wrote before it died reaches the broker", async () => {
    const { proxy, conn, queue, admin } = await setup();
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { durable: false });
    ch.sendToQueue(queue, Buffer.from("x"), { messageId: "x" });
    let acked = false;
    proxy.tap("toBroker", (f) => {
      if (decodeMethod(f)?.name !== "basic.ack") return;
      acked = true;
      // The client dies the moment its ack has left it.
      socketOf(conn).destroy();
    });
    await ch.consume(queue, (msg) => msg && ch.ack(msg), { noAck: false });
    const adminCh = await admin.createChannel();
    for (let i = 0; i < 100 && !acked; i++) await new Promise((r) => setTimeout(r, 10));
    expect(acked).toBe(true);
    let q = await adminCh.checkQueue(queue);
    for (let i = 0; i < 100 && q.consumerCount > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      q = await adminCh.checkQueue(queue);
    }
    expect(q.consumerCount).toBe(0);
    expect(q.messageCount).toBe(0);
  });
  it("drop() throws away what a gate holds and cuts that connection: a dead process's publish never lands", async () => {
    const { proxy, conn, queue, admin } = await setup();
    const adminCh = await admin.createChannel();
    await adminCh.assertQueue(queue, { durable: false });
    const ch = await conn.createChannel();
    ch.on("error", () => {});
    // Stopped at the content header: the broker has the publish method, not the message.
    const gate = proxy.stopAt("toBroker", (f) => f.type === 2);
    ch.sendToQueue(queue, Buffer.from("x"), { messageId: "x" });
    await gate.stopped;
    let closed = false;
    conn.on("close", () => (closed = true));
    gate.drop();
    for (let i = 0; i < 100 && !closed; i++) await new Promise((r) => setTimeout(r, 10));
    expect(closed).toBe(true);
    expect(gate.heldCount).toBe(0);
    expect((await adminCh.checkQueue(queue)).messageCount).toBe(0);
    // The gate is gone: a new one may be set on the same direction.
    proxy.stopAt("toBroker", () => false).open();
  });
});
