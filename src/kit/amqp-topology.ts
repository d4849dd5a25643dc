/**
 * What a client declared and bound, read off a ChaosProxy's wire: every exchange.declare,
 * queue.declare (with its flags and its `x-` arguments, decoded from the field table), the
 * name the broker gave in queue.declare-ok (server-named queues), every queue.bind, queue.unbind
 * and queue.delete, and which of them the broker confirmed. A grader reads the settings of a
 * queue it cannot inspect itself (an exclusive queue of another connection answers a passive
 * declare with 405) from the bytes the learner's client sent and the broker accepted.
 *
 * Requests and their replies are matched per channel, in order: AMQP answers synchronous methods
 * on a channel one at a time, in the order they were sent (no-wait requests get no reply).
 * Decoding never throws: a frame that does not parse is recorded as `malformed`.
 */
import { decodeFieldTable } from "./amqp-table.ts";
import type { AmqpFrame, ChaosProxy } from "./proxy.ts";

export type TableValue = unknown;

class Reader {
  constructor(
    private readonly buf: Buffer,
    public off: number,
    private readonly end: number,
  ) {}
  need(n: number): void {
    if (this.off + n > this.end) throw new RangeError("short frame");
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.off++);
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
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
  /** A field table (the `x-` arguments), decoded as amqp-table.ts decodes message headers. */
  table(): Record<string, TableValue> {
    const t = decodeFieldTable(this.buf, this.off, this.end);
    if (!t) throw new RangeError("bad field table");
    this.off = t.next;
    return t.table;
  }
}

export type TopologyMethod =
  | { name: "exchange.declare"; exchange: string; type: string; passive: boolean; durable: boolean; autoDelete: boolean; internal: boolean; noWait: boolean; arguments: Record<string, TableValue> }
  | { name: "exchange.declare-ok" }
  | { name: "queue.declare"; queue: string; passive: boolean; durable: boolean; exclusive: boolean; autoDelete: boolean; noWait: boolean; arguments: Record<string, TableValue> }
  | { name: "queue.declare-ok"; queue: string; messageCount: number; consumerCount: number }
  | { name: "queue.bind"; queue: string; exchange: string; routingKey: string; noWait: boolean; arguments: Record<string, TableValue> }
  | { name: "queue.bind-ok" }
  | { name: "queue.unbind"; queue: string; exchange: string; routingKey: string; arguments: Record<string, TableValue> }
  | { name: "queue.unbind-ok" }
  | { name: "queue.delete"; queue: string; ifUnused: boolean; ifEmpty: boolean; noWait: boolean }
  | { name: "queue.delete-ok"; messageCount: number }
  | { name: "malformed"; classId: number; methodId: number };

/** Decodes the exchange and queue class methods a topology check needs; null for anything else. */
export function decodeTopology(f: AmqpFrame): TopologyMethod | null {
  if (f.type !== 1 || (f.classId !== 40 && f.classId !== 50) || f.methodId === null) return null;
  const size = f.raw.readUInt32BE(3);
  const r = new Reader(f.raw, 11, 7 + size);
  const key = `${f.classId}/${f.methodId}`;
  try {
    switch (key) {
      case "40/10": {
        r.u16();
        const exchange = r.shortstr();
        const type = r.shortstr();
        const bits = r.u8();
        return { name: "exchange.declare", exchange, type, passive: (bits & 1) !== 0, durable: (bits & 2) !== 0, autoDelete: (bits & 4) !== 0, internal: (bits & 8) !== 0, noWait: (bits & 16) !== 0, arguments: r.table() };
      }
      case "40/11":
        return { name: "exchange.declare-ok" };
      case "50/10": {
        r.u16();
        const queue = r.shortstr();
        const bits = r.u8();
        return { name: "queue.declare", queue, passive: (bits & 1) !== 0, durable: (bits & 2) !== 0, exclusive: (bits & 4) !== 0, autoDelete: (bits & 8) !== 0, noWait: (bits & 16) !== 0, arguments: r.table() };
      }
      case "50/11": {
        const queue = r.shortstr();
        return { name: "queue.declare-ok", queue, messageCount: r.u32(), consumerCount: r.u32() };
      }
      case "50/20": {
        r.u16();
        const queue = r.shortstr();
        const exchange = r.shortstr();
        const routingKey = r.shortstr();
        const noWait = (r.u8() & 1) !== 0;
        return { name: "queue.bind", queue, exchange, routingKey, noWait, arguments: r.table() };
      }
      case "50/21":
        return { name: "queue.bind-ok" };
      case "50/50": {
        r.u16();
        const queue = r.shortstr();
        const exchange = r.shortstr();
        const routingKey = r.shortstr();
        return { name: "queue.unbind", queue, exchange, routingKey, arguments: r.table() };
      }
      case "50/51":
        return { name: "queue.unbind-ok" };
      case "50/40": {
        r.u16();
        const queue = r.shortstr();
        const bits = r.u8();
        return { name: "queue.delete", queue, ifUnused: (bits & 1) !== 0, ifEmpty: (bits & 2) !== 0, noWait: (bits & 4) !== 0 };
      }
      case "50/41":
        return { name: "queue.delete-ok", messageCount: r.u32() };
      default:
        return null;
    }
  } catch {
    return { name: "malformed", classId: f.classId, methodId: f.methodId };
  }
}

/** One queue.declare a client sent, and what the broker answered. */
export interface QueueDeclareSeen {
  link: number;
  channel: number;
  method: Extract<TopologyMethod, { name: "queue.declare" }>;
  /** The queue's name: from declare-ok (a server-named queue gets its name there), else as asked. */
  queue: string;
  /** Whether the broker answered with declare-ok (false while waiting, or when it refused: a channel.close). */
  ok: boolean;
}

export interface BindSeen {
  link: number;
  channel: number;
  method: Extract<TopologyMethod, { name: "queue.bind" }>;
  ok: boolean;
}

export interface ExchangeDeclareSeen {
  link: number;
  channel: number;
  method: Extract<TopologyMethod, { name: "exchange.declare" }>;
  ok: boolean;
}

type Pending = { kind: "queue"; seen: QueueDeclareSeen } | { kind: "bind"; seen: BindSeen } | { kind: "exchange"; seen: ExchangeDeclareSeen } | { kind: "other" };

const SYNC_REPLY: Record<string, string> = {
  "exchange.declare": "exchange.declare-ok",
  "queue.declare": "queue.declare-ok",
  "queue.bind": "queue.bind-ok",
  "queue.unbind": "queue.unbind-ok",
  "queue.delete": "queue.delete-ok",
};

/**
 * The topology a client set up through one proxy, in wire order. Replies are matched to the
 * request of the same kind waiting on the same channel (the broker answers those in order).
 */
export class WireTopology {
  readonly queueDeclares: QueueDeclareSeen[] = [];
  readonly binds: BindSeen[] = [];
  readonly unbinds: { link: number; channel: number; method: Extract<TopologyMethod, { name: "queue.unbind" }> }[] = [];
  readonly exchangeDeclares: ExchangeDeclareSeen[] = [];
  readonly deletes: { link: number; channel: number; method: Extract<TopologyMethod, { name: "queue.delete" }> }[] = [];
  readonly malformed: AmqpFrame[] = [];
  private readonly pending = new Map<string, { reply: string; p: Pending }[]>();
  private readonly listeners: (() => void)[] = [];

  constructor(proxy: ChaosProxy) {
    proxy.tap("toBroker", (f) => this.fromClient(f));
    proxy.tap("toClient", (f) => this.fromBroker(f));
  }

  /** Called after every topology frame (either way), for waits that are events. */
  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  /** The confirmed declare that created (or named) `queue`, the latest one if several. */
  declareOf(queue: string): QueueDeclareSeen | undefined {
    for (let i = this.queueDeclares.length - 1; i >= 0; i--) {
      const d = this.queueDeclares[i]!;
      if (d.ok && d.queue === queue && !d.method.passive) return d;
    }
    return undefined;
  }

  bindsOf(queue: string): BindSeen[] {
    return this.binds.filter((b) => b.method.queue === queue || (b.method.queue === "" && this.lastDeclaredOn(b) === queue));
  }

  /** amqplib allows bind("") meaning the channel's last declared queue; AMQP says the same. */
  private lastDeclaredOn(b: BindSeen): string | undefined {
    const before = this.queueDeclares.filter((d) => d.link === b.link && d.channel === b.channel && d.ok);
    return before[before.length - 1]?.queue;
  }

  private key(f: AmqpFrame): string {
    return `${f.link}:${f.channel}`;
  }

  private fromClient(f: AmqpFrame): void {
    const m = decodeTopology(f);
    if (!m) return;
    if (m.name === "malformed") {
      this.malformed.push(f);
      return this.poke();
    }
    const base = { link: f.link, channel: f.channel };
    let p: Pending = { kind: "other" };
    if (m.name === "queue.declare") {
      const seen: QueueDeclareSeen = { ...base, method: m, queue: m.queue, ok: false };
      this.queueDeclares.push(seen);
      p = { kind: "queue", seen };
    } else if (m.name === "queue.bind") {
      const seen: BindSeen = { ...base, method: m, ok: false };
      this.binds.push(seen);
      p = { kind: "bind", seen };
    } else if (m.name === "exchange.declare") {
      const seen: ExchangeDeclareSeen = { ...base, method: m, ok: false };
      this.exchangeDeclares.push(seen);
      p = { kind: "exchange", seen };
    } else if (m.name === "queue.unbind") {
      this.unbinds.push({ ...base, method: m });
    } else if (m.name === "queue.delete") {
      this.deletes.push({ ...base, method: m });
    }
    const reply = SYNC_REPLY[m.name];
    const noWait = "noWait" in m && m.noWait;
    if (reply && !noWait) {
      const list = this.pending.get(this.key(f)) ?? [];
      list.push({ reply, p });
      this.pending.set(this.key(f), list);
    } else if (noWait) {
      // No reply comes: the broker applies it, or closes the channel.
      if (p.kind !== "other") p.seen.ok = true;
    }
    this.poke();
  }

  private fromBroker(f: AmqpFrame): void {
    // A channel (or connection) closed by the broker answers nothing that waited on it.
    if (f.type === 1 && ((f.classId === 20 && (f.methodId === 40 || f.methodId === 41)) || (f.classId === 10 && (f.methodId === 50 || f.methodId === 51)))) {
      if (f.classId === 10) {
        for (const k of [...this.pending.keys()]) if (k.startsWith(`${f.link}:`)) this.pending.delete(k);
      } else this.pending.delete(this.key(f));
      return;
    }
    const m = decodeTopology(f);
    if (!m || m.name === "malformed") return;
    const list = this.pending.get(this.key(f));
    const i = list?.findIndex((x) => x.reply === m.name) ?? -1;
    if (!list || i < 0) return;
    const [{ p }] = list.splice(i, 1) as [{ reply: string; p: Pending }];
    if (p.kind !== "other") p.seen.ok = true;
    if (p.kind === "queue" && m.name === "queue.declare-ok") p.seen.queue = m.queue;
    this.poke();
  }

  private poke(): void {
    for (const fn of this.listeners) fn();
  }
}
