/**
 * What a consumer did on the wire, read from the frames on the grader's ChaosProxy: its prefetch
 * (basic.qos), its consumers (basic.consume, with no-ack and the limit they were created under),
 * every delivery with its body, and every ack, nack and reject with the deliveries it settled.
 *
 * Everything here is decoded from bytes that crossed a grader-owned socket, so it is an outside
 * observation: the learner's code cannot make the broker see an ack it did not send, or hide
 * one it did. The kit's proxy hands over raw frames; the decoding of the few basic.* methods a
 * consumer check needs lives here until the kit has it.
 *
 * Channels are keyed by connection and channel number: a frame's `link` (which connection of
 * the proxy it crossed) where the proxy says, else all frames count as one connection.
 */
import type { AmqpFrame, ChaosProxy } from "../../../src/kit/index.ts";

// ------------------------------------------------------------------ decoding

class Reader {
  off: number;
  constructor(
    private readonly buf: Buffer,
    start: number,
  ) {
    this.off = start;
  }
  u8(): number {
    return this.buf.readUInt8(this.off++);
  }
  u16(): number {
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(): number {
    const v = this.buf.readBigUInt64BE(this.off);
    this.off += 8;
    return Number(v);
  }
  shortstr(): string {
    const n = this.u8();
    const s = this.buf.toString("utf8", this.off, this.off + n);
    this.off += n;
    return s;
  }
}

export type Method =
  | { m: "basic.qos"; prefetchCount: number; global: boolean }
  | { m: "basic.consume"; queue: string; consumerTag: string; noAck: boolean }
  | { m: "basic.consume-ok"; consumerTag: string }
  | { m: "basic.cancel"; consumerTag: string }
  | { m: "basic.cancel-ok"; consumerTag: string }
  | { m: "basic.deliver"; consumerTag: string; deliveryTag: number; redelivered: boolean }
  | { m: "basic.ack"; deliveryTag: number; multiple: boolean }
  | { m: "basic.nack"; deliveryTag: number; multiple: boolean; requeue: boolean }
  | { m: "basic.reject"; deliveryTag: number; requeue: boolean }
  | { m: "basic.recover"; requeue: boolean }
  | { m: "channel.open" }
  | { m: "channel.close" }
  | { m: "channel.close-ok" }
  | { m: "connection.close" }
  | { m: "connection.close-ok" }
  | { m: "other"; classId: number; methodId: number };

/** Decodes the method frames a consumer check needs; anything else is `other`. */
export function decodeMethod(f: AmqpFrame): Method | null {
  if (f.type !== 1 || f.classId === null || f.methodId === null) return null;
  const r = new Reader(f.raw, 11);
  const key = `${f.classId}/${f.methodId}`;
  switch (key) {
    case "60/10": {
      r.u32(); // prefetch-size
      const prefetchCount = r.u16();
      return { m: "basic.qos", prefetchCount, global: (r.u8() & 1) === 1 };
    }
    case "60/20": {
      r.u16(); // reserved
      const queue = r.shortstr();
      const consumerTag = r.shortstr();
      return { m: "basic.consume", queue, consumerTag, noAck: (r.u8() & 2) === 2 };
    }
    case "60/21":
      return { m: "basic.consume-ok", consumerTag: r.shortstr() };
    case "60/30":
      return { m: "basic.cancel", consumerTag: r.shortstr() };
    case "60/31":
      return { m: "basic.cancel-ok", consumerTag: r.shortstr() };
    case "60/60": {
      const consumerTag = r.shortstr();
      const deliveryTag = r.u64();
      return { m: "basic.deliver", consumerTag, deliveryTag, redelivered: (r.u8() & 1) === 1 };
    }
    case "60/80": {
      const deliveryTag = r.u64();
      return { m: "basic.ack", deliveryTag, multiple: (r.u8() & 1) === 1 };
    }
    case "60/90": {
      const deliveryTag = r.u64();
      return { m: "basic.reject", deliveryTag, requeue: (r.u8() & 1) === 1 };
    }
    case "60/100":
    case "60/110":
      return { m: "basic.recover", requeue: (r.u8() & 1) === 1 };
    case "60/120": {
      const deliveryTag = r.u64();
      const bits = r.u8();
      return { m: "basic.nack", deliveryTag, multiple: (bits & 1) === 1, requeue: (bits & 2) === 2 };
    }
    case "20/10":
      return { m: "channel.open" };
    case "20/40":
      return { m: "channel.close" };
    case "20/41":
      return { m: "channel.close-ok" };
    case "10/50":
      return { m: "connection.close" };
    case "10/51":
      return { m: "connection.close-ok" };
    default:
      return { m: "other", classId: f.classId, methodId: f.methodId };
  }
}

export const isCancelOk = (f: AmqpFrame): boolean => f.type === 1 && f.classId === 60 && f.methodId === 31;
export const isConsumeOk = (f: AmqpFrame): boolean => f.type === 1 && f.classId === 60 && f.methodId === 21;

// ------------------------------------------------------------------ tracking

/** One basic.deliver with its body, and how the client settled it (if it did). */
export interface Delivery {
  /** The channel's key (connection and number). */
  channel: number;
  tag: number;
  consumerTag: string;
  redelivered: boolean;
  body: Buffer;
  /** When the deliver frame crossed (the grader's event sequence). */
  seq: number;
  /** The first ack, nack or reject that covered it; null while outstanding. */
  settled: Settlement | null;
  /** Delivered to a no-ack consumer: the broker forgot it on sending. */
  autoAcked: boolean;
}

export interface Settlement {
  how: "ack" | "nack" | "reject" | "recover";
  /** The delivery tag on the frame, and whether it was `multiple`. */
  tag: number;
  multiple: boolean;
  requeue: boolean;
  seq: number;
  /** The deliveries this one frame settled. */
  covered: Delivery[];
}

interface ConsumerState {
  tag: string;
  noAck: boolean;
  /** The per-consumer prefetch in force when basic.consume was sent (0: none). */
  limit: number;
  cancelled: boolean;
}

interface ChannelState {
  consumerQos: number;
  channelQos: number;
  /** basic.consume requests waiting for their consume-ok, in order. */
  pendingConsumes: { consumerTag: string; noAck: boolean; limit: number }[];
  consumers: Map<string, ConsumerState>;
  deliveries: Map<number, Delivery>;
  /** A delivery whose content (header and body frames) is still arriving. */
  filling: { d: Delivery; size: number; parts: Buffer[]; got: number; header: boolean } | null;
  closed: boolean;
}

/** A shared, monotonic sequence for ordering wire events against the grader's own. */
export class Seq {
  private n = 0;
  next(): number {
    return ++this.n;
  }
}

export class ConsumerWire {
  readonly channels = new Map<number, ChannelState>();
  /** Every delivery, in wire order. */
  readonly deliveries: Delivery[] = [];
  readonly settlements: Settlement[] = [];
  /**
   * Consumers whose cancel the broker confirmed: a basic.cancel-ok, or the close-ok of their
   * channel or connection. Recorded as the frame reaches the proxy (a held frame included).
   */
  readonly cancelConfirmed: { tag: string; via: "cancel-ok" | "close-ok"; seq: number }[] = [];
  readonly cancelsSent: { tag: string; seq: number }[] = [];
  private readonly listeners = new Set<() => void>();
  /** Called with each settlement as it crosses, before it is forwarded to the broker. */
  onSettle: ((s: Settlement) => void) | null = null;

  constructor(
    proxy: ChaosProxy,
    readonly seq: Seq,
  ) {
    proxy.tap("toBroker", (f) => this.fromClient(f));
    proxy.tap("toClient", (f) => this.fromBroker(f));
  }

  /** A channel's key: its connection on the proxy and its number. */
  private key(f: AmqpFrame): number {
    return ((f as { link?: number }).link ?? 0) * 65536 + f.channel;
  }

  private chan(n: number): ChannelState {
    let c = this.channels.get(n);
    if (!c) {
      c = { consumerQos: 0, channelQos: 0, pendingConsumes: [], consumers: new Map(), deliveries: new Map(), filling: null, closed: false };
      this.channels.set(n, c);
    }
    return c;
  }

  /** Calls `fn` on every wire event (for waits that are events, not polls). */
  listen(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private poke(): void {
    for (const fn of [...this.listeners]) fn();
  }

  private fromClient(f: AmqpFrame): void {
    const m = decodeMethod(f);
    if (!m) return;
    if (m.m === "channel.open") {
      // A channel number used again starts from nothing.
      this.channels.delete(this.key(f));
      return;
    }
    const c = this.chan(this.key(f));
    switch (m.m) {
      case "channel.close":
        c.closed = true;
        break;
      case "basic.qos":
        if (m.global) c.channelQos = m.prefetchCount;
        else c.consumerQos = m.prefetchCount;
        break;
      case "basic.consume":
        c.pendingConsumes.push({ consumerTag: m.consumerTag, noAck: m.noAck, limit: c.consumerQos });
        break;
      case "basic.cancel":
        this.cancelsSent.push({ tag: m.consumerTag, seq: this.seq.next() });
        break;
      case "basic.ack":
        this.settle(c, { how: "ack", tag: m.deliveryTag, multiple: m.multiple, requeue: false });
        break;
      case "basic.nack":
        this.settle(c, { how: "nack", tag: m.deliveryTag, multiple: m.multiple, requeue: m.requeue });
        break;
      case "basic.reject":
        this.settle(c, { how: "reject", tag: m.deliveryTag, multiple: false, requeue: m.requeue });
        break;
      case "basic.recover":
        this.settle(c, { how: "recover", tag: 0, multiple: true, requeue: true });
        break;
      default:
        return;
    }
    this.poke();
  }

  private settle(c: ChannelState, s: Omit<Settlement, "seq" | "covered">): void {
    const covered: Delivery[] = [];
    for (const d of c.deliveries.values()) {
      if (d.settled || d.autoAcked) continue;
      if (s.multiple ? s.tag === 0 || d.tag <= s.tag : d.tag === s.tag) covered.push(d);
    }
    const settlement: Settlement = { ...s, seq: this.seq.next(), covered };
    for (const d of covered) d.settled = settlement;
    this.settlements.push(settlement);
    this.onSettle?.(settlement);
  }

  private fromBroker(f: AmqpFrame): void {
    const c = this.chan(this.key(f));
    if (f.type === 2 || f.type === 3) {
      this.content(c, f);
      return;
    }
    const m = decodeMethod(f);
    if (!m) return;
    switch (m.m) {
      case "basic.consume-ok": {
        const req = c.pendingConsumes.shift();
        c.consumers.set(m.consumerTag, { tag: m.consumerTag, noAck: req?.noAck ?? false, limit: req?.limit ?? 0, cancelled: false });
        break;
      }
      case "basic.cancel-ok":
      case "basic.cancel": {
        const con = c.consumers.get(m.consumerTag);
        if (con) con.cancelled = true;
        if (m.m === "basic.cancel-ok") this.cancelConfirmed.push({ tag: m.consumerTag, via: "cancel-ok", seq: this.seq.next() });
        break;
      }
      case "basic.deliver": {
        const con = c.consumers.get(m.consumerTag);
        const d: Delivery = {
          channel: this.key(f),
          tag: m.deliveryTag,
          consumerTag: m.consumerTag,
          redelivered: m.redelivered,
          body: Buffer.alloc(0),
          seq: this.seq.next(),
          settled: null,
          autoAcked: con?.noAck ?? false,
        };
        c.deliveries.set(d.tag, d);
        this.deliveries.push(d);
        c.filling = { d, size: 0, parts: [], got: 0, header: false };
        // The body follows in its own frames; listeners hear of the delivery once it is whole.
        return;
      }
      case "channel.close-ok":
      case "channel.close":
        this.closeChannel(c, m.m === "channel.close-ok");
        break;
      case "connection.close-ok":
      case "connection.close": {
        const link = Math.floor(this.key(f) / 65536);
        for (const [k, ch] of this.channels) if (Math.floor(k / 65536) === link) this.closeChannel(ch, m.m === "connection.close-ok");
        break;
      }
      default:
        return;
    }
    this.poke();
  }

  private closeChannel(c: ChannelState, confirmed: boolean): void {
    c.closed = true;
    for (const con of c.consumers.values()) {
      if (!con.cancelled && confirmed) this.cancelConfirmed.push({ tag: con.tag, via: "close-ok", seq: this.seq.next() });
      con.cancelled = true;
    }
  }

  private content(c: ChannelState, f: AmqpFrame): void {
    const fill = c.filling;
    if (!fill) return;
    const payload = f.raw.subarray(7, f.raw.length - 1);
    if (f.type === 2) {
      fill.size = Number(payload.readBigUInt64BE(4));
      fill.header = true;
    } else {
      fill.parts.push(payload);
      fill.got += payload.length;
    }
    if (fill.header && fill.got >= fill.size) {
      fill.d.body = Buffer.concat(fill.parts);
      c.filling = null;
      this.poke();
    }
  }

  /** Deliveries to manual-ack consumers that no frame has settled yet. */
  outstanding(): Delivery[] {
    return this.deliveries.filter((d) => !d.settled && !d.autoAcked && !this.channels.get(d.channel)?.closed);
  }

  /** The consumers registered through this proxy (consume-ok seen), not yet cancelled. */
  activeConsumers(): ConsumerState[] {
    const out: ConsumerState[] = [];
    for (const c of this.channels.values()) for (const con of c.consumers.values()) if (!con.cancelled) out.push(con);
    return out;
  }

  allConsumers(): ConsumerState[] {
    const out: ConsumerState[] = [];
    for (const c of this.channels.values()) out.push(...c.consumers.values());
    return out;
  }

  /**
   * How many unacked deliveries the broker lets the live consumers hold at once, as RabbitMQ
   * applies basic.qos: the per-consumer limit in force when each consumer was created, and the
   * channel-wide (global) one. Infinity: no limit, or a no-ack consumer.
   */
  limit(): number {
    let total = 0;
    for (const c of this.channels.values()) {
      for (const con of c.consumers.values()) {
        if (con.cancelled) continue;
        if (con.noAck) return Infinity;
        const limits = [con.limit, c.channelQos].filter((n) => n > 0);
        if (!limits.length) return Infinity;
        total += Math.min(...limits);
      }
    }
    return total;
  }

  /** Resolves when `cond` holds (checked on every wire event and every `pokeAll`), or rejects after `ms`. */
  until(cond: () => boolean, ms: number, onTimeout: () => Error): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        off();
        clearTimeout(timer);
        resolve();
      };
      const off = this.listen(check);
      const timer = setTimeout(() => {
        off();
        reject(onTimeout());
      }, ms);
    });
  }

  /** Wakes waiters: the grader changed something their conditions read. */
  pokeAll(): void {
    this.poke();
  }
}
