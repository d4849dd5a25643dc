/** The field-table decoder and the publish/confirm tracker, on frames encoded by amqplib's own codec (no broker). */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeFieldTable, decodeMessageHeaders } from "./amqp-table.ts";
import { WirePublishes } from "./amqp-publishes.ts";
import type { AmqpFrame, ChaosProxy, Direction } from "./proxy.ts";

const require = createRequire(import.meta.url);
const lib = dirname(require.resolve("amqplib"));
const defs = require(join(lib, "lib", "defs.js")) as {
  encodeMethod(id: number, channel: number, fields: Record<string, unknown>): Buffer;
  encodeProperties(id: number, channel: number, size: number, fields: Record<string, unknown>): Buffer;
  [k: string]: unknown;
};
const codec = require(join(lib, "lib", "codec.js")) as { encodeTable(buf: Buffer, table: Record<string, unknown>, offset: number): number };
const id = (name: string) => defs[name] as number;

function frame(raw: Buffer, link = 1): AmqpFrame {
  const type = raw[0]!;
  return { link, type, channel: raw.readUInt16BE(1), classId: type === 1 ? raw.readUInt16BE(7) : null, methodId: type === 1 ? raw.readUInt16BE(9) : null, raw };
}
const method = (name: string, channel: number, fields: Record<string, unknown>, link = 1) => frame(defs.encodeMethod(id(name), channel, fields), link);
const header = (channel: number, size: number, fields: Record<string, unknown>, link = 1) => frame(defs.encodeProperties(60, channel, size, fields), link);
function body(channel: number, content: Buffer, link = 1): AmqpFrame {
  const raw = Buffer.alloc(8 + content.length);
  raw[0] = 3;
  raw.writeUInt16BE(channel, 1);
  raw.writeUInt32BE(content.length, 3);
  content.copy(raw, 7);
  raw[raw.length - 1] = 0xce;
  return frame(raw, link);
}

/** A stand-in for ChaosProxy: taps only. */
function fakeProxy() {
  const taps: { direction: Direction; fn: (f: AmqpFrame) => void }[] = [];
  const proxy = { tap: (direction: Direction, fn: (f: AmqpFrame) => void) => taps.push({ direction, fn }) } as unknown as ChaosProxy;
  const send = (direction: Direction, f: AmqpFrame) => taps.filter((t) => t.direction === direction).forEach((t) => t.fn(f));
  return { proxy, toBroker: (f: AmqpFrame) => send("toBroker", f), toClient: (f: AmqpFrame) => send("toClient", f) };
}

describe("decodeFieldTable", () => {
  it("reads what amqplib writes: integers of every size, strings, floats, booleans, arrays, nested tables, timestamps", () => {
    const table = {
      "x-retry-count": 3,
      big: 70000,
      huge: 2 ** 40,
      neg: -5,
      f: 1.5,
      s: "Zürich \"depot\"",
      b: true,
      v: null,
      a: [1, "two", { three: 3 }],
      t: { nested: { deeper: "yes" } },
      ts: { "!": "timestamp", value: 1700000000 },
      "x-death": [{ count: 2, queue: "q.retry", reason: "expired", "routing-keys": ["q.retry"] }],
    };
    const buf = Buffer.alloc(4096);
    const n = codec.encodeTable(buf, table, 0);
    const got = decodeFieldTable(buf, 0, n);
    expect(got?.next).toBe(n);
    expect(got?.table).toEqual({ ...table, ts: { "!": "timestamp", value: 1700000000 } });
  });

  it("returns null for a table that runs past its end", () => {
    const buf = Buffer.alloc(64);
    const n = codec.encodeTable(buf, { a: "long enough" }, 0);
    expect(decodeFieldTable(buf, 0, n - 3)).toBeNull();
  });

  it("reads the headers of a content header, after content type and encoding", () => {
    expect(decodeMessageHeaders(header(1, 2, { contentType: "application/json", contentEncoding: "utf8", headers: { "x-retry-count": 2, tenant: "acme" }, messageId: "m 1" }))).toEqual({ "x-retry-count": 2, tenant: "acme" });
    expect(decodeMessageHeaders(header(1, 2, { messageId: "m" }))).toEqual({});
    expect(decodeMessageHeaders(method("BasicAck", 1, { deliveryTag: 1, multiple: false }))).toBeNull();
  });
});

describe("WirePublishes", () => {
  it("numbers publishes from confirm.select, reads their properties, headers and body, and expands multiple confirms", () => {
    const { proxy, toBroker, toClient } = fakeProxy();
    const wire = new WirePublishes(proxy);
    toBroker(method("ChannelOpen", 1, { outOfBand: "" }));
    toBroker(method("BasicPublish", 1, { ticket: 0, exchange: "", routingKey: "before", mandatory: false, immediate: false }));
    toBroker(method("ConfirmSelect", 1, { nowait: false }));
    for (let i = 1; i <= 4; i++) {
      const content = Buffer.from(JSON.stringify({ i }));
      toBroker(method("BasicPublish", 1, { ticket: 0, exchange: "ex", routingKey: `k.${i}`, mandatory: i === 2, immediate: false }));
      toBroker(header(1, content.length, { messageId: `m${i}`, deliveryMode: 2, headers: { "x-retry-count": i } }));
      toBroker(body(1, content));
    }
    expect(wire.publishes.map((p) => p.tag)).toEqual([0, 1, 2, 3, 4]);
    expect(wire.publishes[0]!.routingKey).toBe("before");
    const p2 = wire.publishes[2]!;
    expect(p2).toMatchObject({ exchange: "ex", routingKey: "k.2", mandatory: true, headers: { "x-retry-count": 2 } });
    expect(p2.properties?.messageId).toBe("m2");
    expect(p2.body?.toString()).toBe('{"i":2}');

    toClient(method("BasicAck", 1, { deliveryTag: 3, multiple: true }));
    toClient(method("BasicNack", 1, { deliveryTag: 4, multiple: false, requeue: false }));
    expect(wire.confirms).toHaveLength(2);
    expect(wire.confirms[0]!.covered.map((p) => p.tag)).toEqual([1, 2, 3]);
    expect(wire.publishes[4]!.confirm?.how).toBe("nack");
    expect(wire.publishes.slice(1).every((p) => p.confirm?.passedAt != null)).toBe(true);
  });

  it("refuse() turns the broker's ack into a nack of the same tag and flag, in the very bytes the proxy forwards", () => {
    const { proxy, toBroker, toClient } = fakeProxy();
    const wire = new WirePublishes(proxy);
    toBroker(method("ConfirmSelect", 1, { nowait: false }));
    for (let i = 1; i <= 3; i++) {
      const content = Buffer.from("x");
      toBroker(method("BasicPublish", 1, { ticket: 0, exchange: "", routingKey: "q", mandatory: false, immediate: false }));
      toBroker(header(1, content.length, { messageId: `m${i}` }));
      toBroker(body(1, content));
    }
    wire.refuse((c) => c.covered.some((p) => p.properties?.messageId === "m2"));
    toClient(method("BasicAck", 1, { deliveryTag: 1, multiple: false }));
    const refused = method("BasicAck", 1, { deliveryTag: 3, multiple: true });
    toClient(refused);
    expect(wire.confirms.map((c) => [c.how, c.refused ?? false])).toEqual([
      ["ack", false],
      ["nack", true],
    ]);
    // What the client gets decodes as basic.nack, delivery tag 3, multiple, no requeue.
    const decoded = (defs.decode as (id: number, buf: Buffer) => Record<string, unknown>)(refused.raw.readUInt32BE(7), refused.raw.subarray(11, refused.raw.length - 1));
    expect(refused.raw.readUInt16BE(9)).toBe(120);
    expect(decoded).toMatchObject({ deliveryTag: 3, multiple: true, requeue: false });
    expect(wire.publishes.map((p) => p.confirm?.how)).toEqual(["ack", "nack", "nack"]);
  });

  it("reads the headers of a delivery", () => {
    const { proxy, toClient } = fakeProxy();
    const wire = new WirePublishes(proxy);
    const deliver = method("BasicDeliver", 2, { consumerTag: "c", deliveryTag: 1, redelivered: false, exchange: "", routingKey: "q" });
    toClient(deliver);
    toClient(header(2, 2, { messageId: "m", headers: { "x-retry-count": 1, "x-death": [{ count: 1, queue: "q.retry" }] } }));
    expect(wire.headersOfDelivery(deliver)).toEqual({ "x-retry-count": 1, "x-death": [{ count: 1, queue: "q.retry" }] });
  });
});
