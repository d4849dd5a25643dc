/**
 * Decodes AMQP 0-9-1 field tables (RabbitMQ's flavour, the one amqplib writes) off the wire: the
 * `headers` of a message's content header frame, which `decodeContentHeader` in amqp-methods.ts
 * only notes as present. A grader reads a header the learner set (an `x-retry-count`) from the
 * bytes that crossed its proxy, not from what the learner's code says it sent.
 *
 * Values decode as amqplib decodes them: integers and floats as numbers (64-bit ones through
 * Number), long strings as UTF-8 text, timestamps as `{ "!": "timestamp", value }`, decimals as
 * `{ "!": "decimal", value: { places, digits } }`, arrays as arrays, nested tables as objects,
 * byte arrays as Buffers, void as null. Decoding never throws: a table that does not parse is
 * returned as null (itself an observation).
 */
import type { AmqpFrame } from "./proxy.ts";

export type FieldTable = Record<string, unknown>;

class TableReader {
  constructor(
    private readonly buf: Buffer,
    public off: number,
    private readonly end: number,
  ) {}
  need(n: number): void {
    if (this.off + n > this.end) throw new RangeError("short table");
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.off++);
  }
  take(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  shortstr(): string {
    return this.take(this.u8()).toString("utf8");
  }
  u32(): number {
    return this.take(4).readUInt32BE(0);
  }
}

function value(r: TableReader): unknown {
  const tag = String.fromCharCode(r.u8());
  switch (tag) {
    case "t":
      return r.u8() !== 0;
    case "b":
      return r.take(1).readInt8(0);
    case "B":
      return r.take(1).readUInt8(0);
    case "s":
      return r.take(2).readInt16BE(0);
    case "u":
      return r.take(2).readUInt16BE(0);
    case "I":
      return r.take(4).readInt32BE(0);
    case "i":
      return r.take(4).readUInt32BE(0);
    case "l":
      return Number(r.take(8).readBigInt64BE(0));
    case "f":
      return r.take(4).readFloatBE(0);
    case "d":
      return r.take(8).readDoubleBE(0);
    case "D": {
      const places = r.u8();
      const digits = r.take(4).readUInt32BE(0);
      return { "!": "decimal", value: { places, digits } };
    }
    case "S":
      return r.take(r.u32()).toString("utf8");
    case "x":
      return Buffer.from(r.take(r.u32()));
    case "T":
      return { "!": "timestamp", value: Number(r.take(8).readBigUInt64BE(0)) };
    case "V":
      return null;
    case "F": {
      const n = r.u32();
      const end = r.off + n;
      r.need(n);
      const t = fields(r, end);
      r.off = end;
      return t;
    }
    case "A": {
      const n = r.u32();
      const end = r.off + n;
      r.need(n);
      const out: unknown[] = [];
      while (r.off < end) out.push(value(r));
      return out;
    }
    default:
      throw new TypeError(`unknown field type ${JSON.stringify(tag)}`);
  }
}

function fields(r: TableReader, end: number): FieldTable {
  const out: FieldTable = {};
  while (r.off < end) {
    const key = r.shortstr();
    out[key] = value(r);
  }
  return out;
}

/** A field table whose 4-byte length starts at `start` in `buf`; null if it does not parse within `end`. */
export function decodeFieldTable(buf: Buffer, start: number, end = buf.length): { table: FieldTable; next: number } | null {
  try {
    const r = new TableReader(buf, start, end);
    const n = r.u32();
    r.need(n);
    const stop = r.off + n;
    const table = fields(r, stop);
    return { table, next: stop };
  } catch {
    return null;
  }
}

/**
 * The `headers` table of a basic-class content header frame (type 2): `{}` when the message has
 * none, null when the frame is not a basic content header or does not parse.
 */
export function decodeMessageHeaders(f: AmqpFrame): FieldTable | null {
  if (f.type !== 2) return null;
  const raw = f.raw;
  const end = 7 + raw.readUInt32BE(3);
  try {
    if (raw.readUInt16BE(7) !== 60) return null;
    // class (2), weight (2), body size (8), property flags (2), then the properties in order.
    const flags = raw.readUInt16BE(19);
    let off = 21;
    const shortstr = () => {
      const n = raw.readUInt8(off);
      off += 1 + n;
      if (off > end) throw new RangeError("short header");
    };
    if (flags & 0x8000) shortstr(); // content-type
    if (flags & 0x4000) shortstr(); // content-encoding
    if (!(flags & 0x2000)) return {};
    const t = decodeFieldTable(raw, off, end);
    return t ? t.table : null;
  } catch {
    return null;
  }
}
