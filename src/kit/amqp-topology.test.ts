/** The topology decoder and tracker, on frames encoded by amqplib's own codec (no broker). */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { WireTopology, decodeTopology } from "./amqp-topology.ts";
import type { AmqpFrame, ChaosProxy, Direction } from "./proxy.ts";

const require = createRequire(import.meta.url);
const defs = require(join(dirname(require.resolve("amqplib")), "lib", "defs.js")) as {
  encodeMethod(id: number, channel: number, fields: Record<string, unknown>): Buffer;
  [k: string]: unknown;
};

function frame(raw: Buffer, link = 1): AmqpFrame {
  const type = raw[0]!;
  return { link, type, channel: raw.readUInt16BE(1), classId: type === 1 ? raw.readUInt16BE(7) : null, methodId: type === 1 ? raw.readUInt16BE(9) : null, raw };
}
const method = (name: string, channel: number, fields: Record<string, unknown>, link = 1) => frame(defs.encodeMethod(defs[name] as number, channel, fields), link);

const declare = (queue: string, flags: Partial<Record<"durable" | "exclusive" | "autoDelete" | "nowait", boolean>>, args: Record<string, unknown> = {}, channel = 1) =>
  method("QueueDeclare", channel, { ticket: 0, queue, passive: false, durable: false, exclusive: false, autoDelete: false, nowait: false, arguments: args, ...flags });

/** A stand-in for ChaosProxy: only `tap` is used. */
function fakeProxy(): { proxy: ChaosProxy; send(d: Direction, f: AmqpFrame): void } {
  const taps: { d: Direction; fn: (f: AmqpFrame) => void }[] = [];
  const proxy = { tap: (d: Direction, fn: (f: AmqpFrame) => void) => taps.push({ d, fn }) } as unknown as ChaosProxy;
  return { proxy, send: (d, f) => taps.filter((x) => x.d === d).forEach((x) => x.fn(f)) };
}

describe("decodeTopology", () => {
  it("reads queue.declare flags and its x- arguments of every type amqplib writes", () => {
    const m = decodeTopology(declare("", { exclusive: true, autoDelete: true }, { "x-max-length": 7, "x-overflow": "drop-head", "x-message-ttl": 70000, big: 2 ** 40, ratio: 0.5, on: true }));
    expect(m).toEqual({
      name: "queue.declare",
      queue: "",
      passive: false,
      durable: false,
      exclusive: true,
      autoDelete: true,
      noWait: false,
      arguments: { "x-max-length": 7, "x-overflow": "drop-head", "x-message-ttl": 70000, big: 2 ** 40, ratio: 0.5, on: true },
    });
  });

  it("reads exchange.declare, queue.bind, queue.delete and declare-ok", () => {
    expect(decodeTopology(method("ExchangeDeclare", 1, { ticket: 0, exchange: "prices", type: "topic", passive: false, durable: true, autoDelete: false, internal: false, nowait: false, arguments: {} }))).toEqual({
      name: "exchange.declare",
      exchange: "prices",
      type: "topic",
      passive: false,
      durable: true,
      autoDelete: false,
      internal: false,
      noWait: false,
      arguments: {},
    });
    expect(decodeTopology(method("QueueBind", 1, { ticket: 0, queue: "q", exchange: "prices", routingKey: "price.*", nowait: false, arguments: {} }))).toMatchObject({ name: "queue.bind", queue: "q", exchange: "prices", routingKey: "price.*" });
    expect(decodeTopology(method("QueueDelete", 1, { ticket: 0, queue: "q", ifUnused: false, ifEmpty: true, nowait: false }))).toEqual({ name: "queue.delete", queue: "q", ifUnused: false, ifEmpty: true, noWait: false });
    expect(decodeTopology(method("QueueDeclareOk", 1, { queue: "amq.gen-1", messageCount: 3, consumerCount: 1 }))).toEqual({ name: "queue.declare-ok", queue: "amq.gen-1", messageCount: 3, consumerCount: 1 });
    expect(decodeTopology(method("BasicQos", 1, { prefetchSize: 0, prefetchCount: 1, global: false }))).toBeNull();
  });

  it("names a frame too short for its method malformed, without throwing", () => {
    const f = declare("q", {});
    const cut = Buffer.from(f.raw.subarray(0, 14));
    cut.writeUInt32BE(cut.length - 8, 3);
    expect(decodeTopology({ ...f, raw: cut })).toEqual({ name: "malformed", classId: 50, methodId: 10 });
  });
});

describe("WireTopology", () => {
  it("gives a server-named queue the name from its declare-ok, per channel, in order", () => {
    const { proxy, send } = fakeProxy();
    const topo = new WireTopology(proxy);
    send("toBroker", declare("", { exclusive: true }, { "x-max-length": 5 }, 1));
    send("toBroker", declare("", { exclusive: true }, { "x-max-length": 9 }, 2));
    send("toClient", method("QueueDeclareOk", 2, { queue: "amq.gen-B", messageCount: 0, consumerCount: 0 }));
    send("toClient", method("QueueDeclareOk", 1, { queue: "amq.gen-A", messageCount: 0, consumerCount: 0 }));
    expect(topo.declareOf("amq.gen-A")?.method.arguments).toEqual({ "x-max-length": 5 });
    expect(topo.declareOf("amq.gen-B")?.method.arguments).toEqual({ "x-max-length": 9 });
    send("toBroker", method("QueueBind", 1, { ticket: 0, queue: "", exchange: "x", routingKey: "price.A", nowait: false, arguments: {} }));
    expect(topo.bindsOf("amq.gen-A")).toHaveLength(1);
    expect(topo.binds[0]!.ok).toBe(false);
    send("toClient", method("QueueBindOk", 1, {}));
    expect(topo.binds[0]!.ok).toBe(true);
  });

  it("leaves a declare the broker refused unconfirmed", () => {
    const { proxy, send } = fakeProxy();
    const topo = new WireTopology(proxy);
    send("toBroker", declare("shared", { durable: true }));
    send("toClient", method("ChannelClose", 1, { replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 50, methodId: 10 }));
    send("toClient", method("QueueDeclareOk", 1, { queue: "shared", messageCount: 0, consumerCount: 0 }));
    expect(topo.queueDeclares[0]!.ok).toBe(false);
    expect(topo.declareOf("shared")).toBeUndefined();
  });
});
