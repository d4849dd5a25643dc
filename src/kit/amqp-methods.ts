/**
 * Decodes the arguments of the AMQP 0-9-1 methods a grader reads off the proxy's wire: what a
 * consumer asked for (basic.qos, basic.consume, basic.cancel), what the broker handed it
 * (basic.deliver, basic.get-ok, and the message properties in the content header that follows),
 * how it settled each delivery (basic.ack, basic.nack, basic.reject, basic.recover), and why a
 * channel or connection was closed. Only these are decoded; every other method is named by its
 * class and method ids. Decoding never throws: a frame too short for its method decodes as
 * `{ name: "malformed" }`, which is itself an observation.
 */
import type { AmqpFrame } from "./proxy.ts";

export type AmqpMethod =
  | { name: "basic.qos"; prefetchSize: number; prefetchCount: number; global: boolean }
  | { name: "basic.consume"; queue: string; consumerTag: string; noLocal: boolean; noAck: boolean; exclusive: boolean; noWait: boolean }
  | { name: "basic.consume-ok"; consumerTag: string }
  | { name: "basic.cancel"; consumerTag: string; noWait: boolean }
  | { name: "basic.cancel-ok"; consumerTag: string }
  | { name: "basic.deliver"; consumerTag: string; deliveryTag: number; redelivered: boolean; exchange: string; routingKey: string }
  | { name: "basic.get"; queue: string; noAck: boolean }
  | { name: "basic.get-ok"; deliveryTag: number; redelivered: boolean; exchange: string; routingKey: string; messageCount: number }
  | { name: "basic.ack"; deliveryTag: number; multiple: boolean }
  | { name: "basic.nack"; deliveryTag: number; multiple: boolean; requeue: boolean }
  | { name: "basic.reject"; deliveryTag: number; requeue: boolean }
  | { name: "basic.recover"; requeue: boolean }
  | { name: "channel.close" | "connection.close"; replyCode: number; replyText: string; classId: number; methodId: number }
  | { name: "channel.close-ok" | "connection.close-ok" | "channel.open" | "channel.open-ok" | "basic.qos-ok" | "basic.get-empty" }
  | { name: "other"; classId: number; methodId: number }
  | { name: "malformed"; classId: number; methodId: number };

/** The basic class's message properties, as carried in a content header frame. */
export interface BasicProperties {
  contentType?: string;
  contentEncoding?: string;
  /** Present when the message has headers; their content is not decoded. */
  hasHeaders?: boolean;
  deliveryMode?: number;
  priority?: number;
  correlationId?: string;
  replyTo?: string;
  expiration?: string;
  messageId?: string;
  timestamp?: number;
  type?: string;
  userId?: string;
  appId?: string;
  clusterId?: string;
}

export interface ContentHeader {
  classId: number;
  bodySize: number;
  properties: BasicProperties;
}

/** Reads fields in order from a frame's payload; any read past the end throws, caught by the decoders. */
class Reader {
  private off: number;
  constructor(
    private readonly buf: Buffer,
    start: number,
    private readonly end: number,
  ) {
    this.off = start;
  }
  private need(n: number): void {
    if (this.off + n > this.end) throw new RangeError("short frame");
  }
  octet(): number {
    this.need(1);
    return this.buf.readUInt8(this.off++);
  }
  short(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  long(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  longlong(): number {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return Number(v);
  }
  shortstr(): string {
    const n = this.octet();
    this.need(n);
    const s = this.buf.toString("utf8", this.off, this.off + n);
    this.off += n;
    return s;
  }
  /** A field table, skipped: its size comes first. */
  skipTable(): void {
    const n = this.long();
    this.need(n);
    this.off += n;
  }
}

const METHOD_PAYLOAD = 7 + 4; // frame header (7), then class id and method id

/** The method a frame carries, with its arguments for the methods listed above; null for other frame types. */
export function decodeMethod(f: AmqpFrame): AmqpMethod | null {
  if (f.type !== 1 || f.classId === null || f.methodId === null) return null;
  const classId = f.classId;
  const methodId = f.methodId;
  const size = f.raw.readUInt32BE(3);
  const r = new Reader(f.raw, METHOD_PAYLOAD, 7 + size);
  try {
    return decodeArgs(classId, methodId, r);
  } catch {
    return { name: "malformed", classId, methodId };
  }
}

function decodeArgs(classId: number, methodId: number, r: Reader): AmqpMethod {
  const key = `${classId}/${methodId}`;
  switch (key) {
    case "60/10": {
      const prefetchSize = r.long();
      const prefetchCount = r.short();
      const global = (r.octet() & 1) !== 0;
      return { name: "basic.qos", prefetchSize, prefetchCount, global };
    }
    case "60/11":
      return { name: "basic.qos-ok" };
    case "60/20": {
      r.short(); // reserved (ticket)
      const queue = r.shortstr();
      const consumerTag = r.shortstr();
      const bits = r.octet();
      return { name: "basic.consume", queue, consumerTag, noLocal: (bits & 1) !== 0, noAck: (bits & 2) !== 0, exclusive: (bits & 4) !== 0, noWait: (bits & 8) !== 0 };
    }
    case "60/21":
      return { name: "basic.consume-ok", consumerTag: r.shortstr() };
    case "60/30": {
      const consumerTag = r.shortstr();
      return { name: "basic.cancel", consumerTag, noWait: (r.octet() & 1) !== 0 };
    }
    case "60/31":
      return { name: "basic.cancel-ok", consumerTag: r.shortstr() };
    case "60/60": {
      const consumerTag = r.shortstr();
      const deliveryTag = r.longlong();
      const redelivered = (r.octet() & 1) !== 0;
      const exchange = r.shortstr();
      const routingKey = r.shortstr();
      return { name: "basic.deliver", consumerTag, deliveryTag, redelivered, exchange, routingKey };
    }
    case "60/70": {
      r.short(); // reserved (ticket)
      const queue = r.shortstr();
      return { name: "basic.get", queue, noAck: (r.octet() & 1) !== 0 };
    }
    case "60/71": {
      const deliveryTag = r.longlong();
      const redelivered = (r.octet() & 1) !== 0;
      const exchange = r.shortstr();
      const routingKey = r.shortstr();
      const messageCount = r.long();
      return { name: "basic.get-ok", deliveryTag, redelivered, exchange, routingKey, messageCount };
    }
    case "60/72":
      return { name: "basic.get-empty" };
    case "60/80": {
      const deliveryTag = r.longlong();
      return { name: "basic.ack", deliveryTag, multiple: (r.octet() & 1) !== 0 };
    }
    case "60/90": {
      const deliveryTag = r.longlong();
      return { name: "basic.reject", deliveryTag, requeue: (r.octet() & 1) !== 0 };
    }
    case "60/110":
      return { name: "basic.recover", requeue: (r.octet() & 1) !== 0 };
    case "60/120": {
      const deliveryTag = r.longlong();
      const bits = r.octet();
      return { name: "basic.nack", deliveryTag, multiple: (bits & 1) !== 0, requeue: (bits & 2) !== 0 };
    }
    case "10/50":
    case "20/40": {
      const replyCode = r.short();
      const replyText = r.shortstr();
      const cls = r.short();
      const method = r.short();
      return { name: classId === 10 ? "connection.close" : "channel.close", replyCode, replyText, classId: cls, methodId: method };
    }
    case "10/51":
      return { name: "connection.close-ok" };
    case "20/10":
      return { name: "channel.open" };
    case "20/11":
      return { name: "channel.open-ok" };
    case "20/41":
      return { name: "channel.close-ok" };
    default:
      return { name: "other", classId, methodId };
  }
}

/** Property flags of the basic class, highest bit first, in the order the properties follow. */
const PROPERTY_ORDER: [keyof BasicProperties, "shortstr" | "table" | "octet" | "longlong"][] = [
  ["contentType", "shortstr"],
  ["contentEncoding", "shortstr"],
  ["hasHeaders", "table"],
  ["deliveryMode", "octet"],
  ["priority", "octet"],
  ["correlationId", "shortstr"],
  ["replyTo", "shortstr"],
  ["expiration", "shortstr"],
  ["messageId", "shortstr"],
  ["timestamp", "longlong"],
  ["type", "shortstr"],
  ["userId", "shortstr"],
  ["appId", "shortstr"],
  ["clusterId", "shortstr"],
];

/** A content header frame (type 2): class, body size and, for the basic class, the message properties. */
export function decodeContentHeader(f: AmqpFrame): ContentHeader | null {
  if (f.type !== 2) return null;
  const size = f.raw.readUInt32BE(3);
  const r = new Reader(f.raw, 7, 7 + size);
  try {
    const classId = r.short();
    r.short(); // weight, always 0
    const bodySize = r.longlong();
    const flags = r.short();
    const properties: BasicProperties = {};
    if (classId === 60) {
      PROPERTY_ORDER.forEach(([key, kind], i) => {
        if ((flags & (1 << (15 - i))) === 0) return;
        const props = properties as Record<string, unknown>;
        if (kind === "shortstr") props[key] = r.shortstr();
        else if (kind === "octet") props[key] = r.octet();
        else if (kind === "longlong") props[key] = r.longlong();
        else {
          r.skipTable();
          props[key] = true;
        }
      });
    }
    return { classId, bodySize, properties };
  } catch {
    return null;
  }
}

/** Whether a frame settles deliveries: basic.ack, basic.nack, basic.reject or basic.recover from a client. */
export const isSettlement = (f: AmqpFrame): boolean => f.type === 1 && f.classId === 60 && (f.methodId === 80 || f.methodId === 90 || f.methodId === 110 || f.methodId === 120);
