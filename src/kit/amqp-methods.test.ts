/** The wire decoders and the delivery tracker, on frames encoded by amqplib's own codec (no broker). */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeContentHeader, decodeMethod, isSettlement } from "./amqp-methods.ts";
import { WireDeliveries } from "./amqp-deliveries.ts";
import type { AmqpFrame, ChaosProxy, Direction } from "./proxy.ts";

// amqplib's generated codec: the reference encoding of every method and of the basic properties.
const require = createRequire(import.meta.url);
const defs = require(join(dirname(require.resolve("amqplib")), "lib", "defs.js")) as {
  encodeMethod(id: number, channel: number, fields: Record<string, unknown>): Buffer;
  encodeProperties(id: number, channel: number, size: number, fields: Record<string, unknown>): Buffer;
  [k: string]: unknown;
};
const id = (name: string) => defs[name] as number;

function frame(raw: Buffer, link = 1): AmqpFrame {
  const type = raw[0]!;
  return { link, type, channel: raw.readUInt16BE(1), classId: type === 1 ? raw.readUInt16BE(7) : null, methodId: type === 1 ? raw.readUInt16BE(9) : null, raw };
}
const method = (name: string, channel: number, fields: Record<string, unknown>, link = 1) => frame(defs.encodeMethod(id(name), channel, fields), link);
const header = (channel: number, fields: Record<string, unknown>, link = 1) => frame(defs.encodeProperties(60, channel, 3, fields), link);

describe("decodeMethod", () => {
  it("reads basic.qos, basic.consume and basic.cancel as a client sends them", () => {
    expect(decodeMethod(method("BasicQos", 1, { prefetchSize: 0, prefetchCount: 17, global: true }))).toEqual({ name: "basic.qos", prefetchSize: 0, prefetchCount: 17, global: true });
    const consume = decodeMethod(method("BasicConsume", 2, { ticket: 0, queue: "payments.q", consumerTag: "", noLocal: false, noAck: true, exclusive: false, nowait: false, arguments: { "x-priority": 3 } }));
    expect(consume).toEqual({ name: "basic.consume", queue: "payments.q", consumerTag: "", noLocal: false, noAck: true, exclusive: false, noWait: false });
    expect(decodeMethod(method("BasicCancel", 1, { consumerTag: "amq.ctag-1", nowait: false }))).toEqual({ name: "basic.cancel", consumerTag: "amq.ctag-1", noWait: false });
  });

  it("reads deliveries and settlements with their tags and flags", () => {
    expect(decodeMethod(method("BasicDeliver", 1, { consumerTag: "c1", deliveryTag: 2 ** 40 + 3, redelivered: true, exchange: "", routingKey: "q" }))).toEqual({
      name: "basic.deliver",
      consumerTag: "c1",
      deliveryTag: 2 ** 40 + 3,
      redelivered: true,
      exchange: "",
      routingKey: "q",
    });
    expect(decodeMethod(method("BasicAck", 1, { deliveryTag: 9, multiple: true }))).toEqual({ name: "basic.ack", deliveryTag: 9, multiple: true });
    expect(decodeMethod(method("BasicNack", 1, { deliveryTag: 4, multiple: false, requeue: true }))).toEqual({ name: "basic.nack", deliveryTag: 4, multiple: false, requeue: true });
    expect(decodeMethod(method("BasicNack", 1, { deliveryTag: 4, multiple: true, requeue: false }))).toEqual({ name: "basic.nack", deliveryTag: 4, multiple: true, requeue: false });
    expect(decodeMethod(method("BasicReject", 1, { deliveryTag: 5, requeue: false }))).toEqual({ name: "basic.reject", deliveryTag: 5, requeue: false });
    expect(decodeMethod(method("BasicRecover", 1, { requeue: true }))).toEqual({ name: "basic.recover", requeue: true });
    expect(isSettlement(method("BasicAck", 1, { deliveryTag: 1, multiple: false }))).toBe(true);
    expect(isSettlement(method("BasicQos", 1, { prefetchSize: 0, prefetchCount: 1, global: false }))).toBe(false);
  });

  it("reads why a channel was closed, names other methods, and flags a short frame", () => {
    expect(decodeMethod(method("ChannelClose", 1, { replyCode: 406, replyText: "PRECONDITION_FAILED - unknown delivery tag 3", classId: 60, methodId: 80 }))).toEqual({
      name: "channel.close",
      replyCode: 406,
      replyText: "PRECONDITION_FAILED - unknown delivery tag 3",
      classId: 60,
      methodId: 80,
    });
    expect(decodeMethod(method("QueueDeclare", 1, { ticket: 0, queue: "q", passive: false, durable: true, exclusive: false, autoDelete: false, nowait: false, arguments: {} }))).toEqual({ name: "other", classId: 50, methodId: 10 });
    const ack = defs.encodeMethod(id("BasicAck"), 1, { deliveryTag: 1, multiple: false });
    const short = Buffer.concat([ack.subarray(0, 13), Buffer.from([0xce])]);
    short.writeUInt32BE(13 - 7, 3);
    expect(decodeMethod(frame(short))).toEqual({ name: "malformed", classId: 60, methodId: 80 });
    expect(decodeMethod(frame(Buffer.from([8, 0, 0, 0, 0, 0, 0, 0xce])))).toBeNull();
  });
});

describe("decodeContentHeader", () => {
  it("finds the message id behind headers and other properties", () => {
    const h = decodeContentHeader(header(1, { contentType: "application/json", headers: { a: "x", n: 42 }, deliveryMode: 2, priority: 5, correlationId: "c", messageId: `pay "O'Brien": 7`, timestamp: 1700000000, appId: "app" }));
    expect(h?.classId).toBe(60);
    expect(h?.bodySize).toBe(3);
    expect(h?.properties).toEqual({ contentType: "application/json", hasHeaders: true, deliveryMode: 2, priority: 5, correlationId: "c", messageId: `pay "O'Brien": 7`, timestamp: 1700000000, appId: "app" });
    expect(decodeContentHeader(header(1, {}))?.properties).toEqual({});
  });
});

/** A stand-in for ChaosProxy: the tracker only taps. */
function fakeProxy(): { proxy: ChaosProxy; send(dir: Direction, f: AmqpFrame): void } {
  const taps: { direction: Direction; fn: (f: AmqpFrame) => void }[] = [];
  const proxy = { tap: (direction: Direction, fn: (f: AmqpFrame) => void) => taps.push({ direction, fn }) } as unknown as ChaosProxy;
  return { proxy, send: (dir, f) => taps.filter((t) => t.direction === dir).forEach((t) => t.fn(f)) };
}

describe("WireDeliveries", () => {
  function deliver(send: (d: Direction, f: AmqpFrame) => void, tag: number, messageId: string, opts: { link?: number; channel?: number; ctag?: string; redelivered?: boolean } = {}) {
    const ch = opts.channel ?? 1;
    send("toClient", method("BasicDeliver", ch, { consumerTag: opts.ctag ?? "c1", deliveryTag: tag, redelivered: opts.redelivered ?? false, exchange: "", routingKey: "q" }, opts.link));
    send("toClient", header(ch, { messageId }, opts.link));
  }

  it("settles every outstanding tag up to a multiple ack, per channel and connection", () => {
    const { proxy, send } = fakeProxy();
    const w = new WireDeliveries(proxy);
    const seen: string[] = [];
    w.onDeliver((d) => seen.push(`${d.index}:${d.messageId}`));
    for (let i = 1; i <= 5; i++) deliver(send, i, `m${i}`);
    deliver(send, 1, "other-link", { link: 2 });
    expect(seen).toEqual(["1:m1", "2:m2", "3:m3", "4:m4", "5:m5", "1:other-link"]);
    const settled: string[][] = [];
    w.onSettle((ds, s) => settled.push([s.how, ...ds.map((d) => d.messageId!)]));
    send("toBroker", method("BasicAck", 1, { deliveryTag: 2, multiple: false }));
    const multi = method("BasicAck", 1, { deliveryTag: 4, multiple: true });
    send("toBroker", multi);
    expect(settled).toEqual([["ack", "m2"], ["ack", "m1", "m3", "m4"]]);
    expect(w.settledBy(multi).map((d) => d.tag)).toEqual([1, 3, 4]);
    expect(w.outstanding(1).map((d) => d.messageId)).toEqual(["m5"]);
    expect(w.outstanding(2).map((d) => d.messageId)).toEqual(["other-link"]);
    // ackAll: tag 0 with multiple settles the rest of the channel.
    send("toBroker", method("BasicAck", 1, { deliveryTag: 0, multiple: true }));
    expect(w.outstanding(1)).toEqual([]);
    expect(w.unknownTags).toEqual([]);
    send("toBroker", method("BasicAck", 1, { deliveryTag: 3, multiple: false }));
    expect(w.unknownTags.length).toBe(1);
  });

  it("records nack and reject with their requeue flag, and a close gives the rest back", () => {
    const { proxy, send } = fakeProxy();
    const w = new WireDeliveries(proxy);
    for (let i = 1; i <= 4; i++) deliver(send, i, `m${i}`);
    send("toBroker", method("BasicNack", 1, { deliveryTag: 1, multiple: false, requeue: true }));
    send("toBroker", method("BasicReject", 1, { deliveryTag: 2, requeue: false }));
    send("toBroker", method("ChannelClose", 1, { replyCode: 200, replyText: "bye", classId: 0, methodId: 0 }));
    expect(w.deliveries.map((d) => [d.messageId, d.settled?.how, d.settled?.requeue])).toEqual([
      ["m1", "nack", true],
      ["m2", "reject", false],
      ["m3", "closed", true],
      ["m4", "closed", true],
    ]);
    expect(w.closes[0]?.by).toBe("client");
  });

  it("knows a no-ack consumer's deliveries are settled as they are sent, and where qos came", () => {
    const { proxy, send } = fakeProxy();
    const w = new WireDeliveries(proxy);
    send("toBroker", method("BasicConsume", 1, { ticket: 0, queue: "q", consumerTag: "", noLocal: false, noAck: true, exclusive: false, nowait: false, arguments: {} }));
    send("toBroker", method("BasicQos", 1, { prefetchSize: 0, prefetchCount: 5, global: false }));
    send("toClient", method("BasicConsumeOk", 1, { consumerTag: "amq.ctag-x" }));
    deliver(send, 1, "m1", { ctag: "amq.ctag-x" });
    expect(w.deliveries[0]?.settled?.how).toBe("auto");
    expect(w.consumes[0]?.method.noAck).toBe(true);
    expect(w.qos[0]?.afterConsume).toBe(true);
  });
});
