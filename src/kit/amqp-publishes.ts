/**
 * What a publisher sent and what the broker answered, read off a ChaosProxy's wire: every
 * basic.publish from the client (exchange, routing key, properties, headers, body), numbered
 * with the delivery tag the broker gives it once its channel is in confirm mode (counted from
 * confirm.select, per channel, as the broker counts), and the basic.ack / basic.nack that
 * settled it (`multiple` expanded to every unconfirmed tag up to the frame's tag). It also reads
 * the headers of what the broker delivers (basic.deliver, basic.get-ok), for consumers that
 * carry state in a header.
 *
 * It can hold the broker's confirms at the proxy (`hold`), or let them through one frame at a
 * time (`step`), and records for every confirm when it reached the proxy and when it was let
 * through to the client: what the learner's code could know, and when.
 *
 * Listeners and taps run synchronously in the proxy's tap, before the proxy decides whether a
 * frame is held or gated. Construct it before the learner's connection exists, so it sees every
 * frame from the first.
 */
import { decodeContentHeader, type BasicProperties } from "./amqp-methods.ts";
import { decodeMessageHeaders, type FieldTable } from "./amqp-table.ts";
import { isConfirm, type AmqpFrame, type ChaosProxy, type Gate } from "./proxy.ts";

export interface ConfirmSeen {
  how: "ack" | "nack";
  frame: AmqpFrame;
  link: number;
  channel: number;
  /** The frame's own delivery tag and multiple flag. */
  tag: number;
  multiple: boolean;
  /** performance.now() when the frame reached the proxy from the broker. */
  at: number;
  /** The publishes it settled (with `multiple`, every unconfirmed one up to `tag`). */
  covered: WirePublish[];
  /**
   * The broker acked, and the grader turned the ack into a nack on its way (see `refuse`): the
   * client was told the broker refused publishes it in fact has. `how` is what the client saw.
   */
  refused?: boolean;
  /** performance.now() when the proxy let it through to the client; null while it is held. */
  passedAt: number | null;
}

export interface WirePublish {
  link: number;
  channel: number;
  /** Delivery tag on its channel (1, 2, …); 0 when the channel is not in confirm mode. */
  tag: number;
  /** 1-based, in the order publishes reached the proxy (all connections). */
  index: number;
  exchange: string;
  routingKey: string;
  mandatory: boolean;
  /** performance.now() when its basic.publish reached the proxy. */
  at: number;
  /** From the content header; null until it has crossed. */
  properties: BasicProperties | null;
  headers: FieldTable | null;
  /** The whole body, once every body frame has crossed; null until then. */
  body: Buffer | null;
  confirm: ConfirmSeen | null;
  frame: AmqpFrame;
}

interface ChannelState {
  confirming: boolean;
  nextTag: number;
  unconfirmed: Map<number, WirePublish>;
  body: { p: WirePublish; size: number; chunks: Buffer[]; got: number } | null;
}

const chanKey = (f: AmqpFrame) => `${f.link}:${f.channel}`;
const isMethod = (f: AmqpFrame, c: number, m: number) => f.type === 1 && f.classId === c && f.methodId === m;

/** Reads basic.publish's exchange, routing key and flags (class 60, method 40). */
function decodePublish(f: AmqpFrame): { exchange: string; routingKey: string; mandatory: boolean } | null {
  try {
    const raw = f.raw;
    let off = 11 + 2; // method header, then the reserved ticket
    const ex = raw.readUInt8(off);
    const exchange = raw.toString("utf8", off + 1, off + 1 + ex);
    off += 1 + ex;
    const rk = raw.readUInt8(off);
    const routingKey = raw.toString("utf8", off + 1, off + 1 + rk);
    off += 1 + rk;
    return { exchange, routingKey, mandatory: (raw.readUInt8(off) & 1) !== 0 };
  } catch {
    return null;
  }
}

export class WirePublishes {
  readonly publishes: WirePublish[] = [];
  readonly confirms: ConfirmSeen[] = [];
  private readonly channels = new Map<string, ChannelState>();
  private readonly confirmOf = new WeakMap<AmqpFrame, ConfirmSeen>();
  private readonly deliveryHeaders = new WeakMap<AmqpFrame, FieldTable | null>();
  private readonly awaitingDeliveryHeader = new Map<string, AmqpFrame>();
  private readonly listeners: (() => void)[] = [];
  private readonly publishListeners: ((p: WirePublish) => void)[] = [];
  private readonly confirmListeners: ((c: ConfirmSeen) => void)[] = [];
  private readonly deliveryListeners: ((deliver: AmqpFrame, headers: FieldTable | null) => void)[] = [];

  // refusing
  private refuseRule: ((c: ConfirmSeen) => boolean) | null = null;

  // holding
  private rule: ((c: ConfirmSeen) => boolean) | null = null;
  private readonly decided = new WeakMap<AmqpFrame, boolean>();
  private readonly heldChannels = new Set<string>();
  private readonly heldConfirms: ConfirmSeen[] = [];

  // stepping
  private stepGate: Gate | null = null;
  private stepMatch: ((c: ConfirmSeen) => boolean) | null = null;
  private stepEngaged = false;
  private stepLink = 0;
  private readonly gatedConfirms: ConfirmSeen[] = [];

  constructor(private readonly proxy: ChaosProxy) {
    proxy.tap("toBroker", (f) => this.fromClient(f));
    proxy.tap("toClient", (f) => this.fromBroker(f));
  }

  /** Called after every frame this tracker read (to wake a waiter). */
  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }
  /** Called when a publish's body has fully crossed (its properties, headers and body are known). */
  onPublish(fn: (p: WirePublish) => void): void {
    this.publishListeners.push(fn);
  }
  /** Called for every basic.ack / basic.nack from the broker, before the proxy holds or forwards it. */
  onConfirm(fn: (c: ConfirmSeen) => void): void {
    this.confirmListeners.push(fn);
  }
  /** Called when a basic.deliver / basic.get-ok's content header has crossed, with its headers. */
  onDelivery(fn: (deliver: AmqpFrame, headers: FieldTable | null) => void): void {
    this.deliveryListeners.push(fn);
  }

  /** The confirm a frame carried (for frames already seen). */
  confirmFor(f: AmqpFrame): ConfirmSeen | undefined {
    return this.confirmOf.get(f);
  }

  /** The headers of a delivery, by its basic.deliver / basic.get-ok frame (undefined until its content header crossed). */
  headersOfDelivery(deliver: AmqpFrame): FieldTable | null | undefined {
    return this.deliveryHeaders.get(deliver);
  }

  /** Publishes whose messageId property is `id`, in wire order. */
  withMessageId(id: string): WirePublish[] {
    return this.publishes.filter((p) => p.properties?.messageId === id);
  }

  /** Whether the learner's code can have seen this publish's confirm: it crossed the proxy toward the client. */
  static confirmPassed(p: WirePublish): boolean {
    return p.confirm?.passedAt != null;
  }

  // ------------------------------------------------------------------ holding confirms

  /**
   * Holds the broker's confirms that `which` picks (all, without it) until `release()`. Frames
   * that follow a held one on its channel are held behind it, so each channel's frames still
   * arrive in the order the broker sent them; other channels flow. Uses the proxy's hold rule
   * (one per proxy): do not combine with another hold on the same proxy.
   */
  hold(which?: (c: ConfirmSeen) => boolean): void {
    this.rule = which ?? (() => true);
    this.proxy.hold("toClient", (f) => this.decided.get(f) ?? this.decideOther(f));
  }

  /**
   * From now on, each broker basic.ack that `which` picks reaches the client as a basic.nack of
   * the same delivery tag (and multiple flag): the client is told the broker did not take those
   * publishes, as it would be if a queue refused them, while the broker in fact has them. The
   * client's right answer is the one to a real nack; what the broker holds then is a duplicate
   * at worst. `which` sees the confirm as the broker sent it (`how` "ack").
   */
  refuse(which: (c: ConfirmSeen) => boolean): void {
    this.refuseRule = which;
  }

  get holding(): boolean {
    return this.rule !== null;
  }

  /** Lets every held frame go, in order, and holds nothing more. */
  release(): void {
    this.rule = null;
    this.heldChannels.clear();
    const now = performance.now();
    for (const c of this.heldConfirms.splice(0)) c.passedAt = now;
    this.proxy.release();
    this.changed();
  }

  // ------------------------------------------------------------------ stepping through confirms

  /**
   * From the first confirm `which` picks, stops every frame toward the client on that
   * connection (a gate: nothing overtakes), until `next()` lets the frames up to the next such
   * confirm through, one confirm at a time; `open()` lets everything go. Returns the number of
   * confirms waiting at the gate after the call. One stepper per tracker; not with `hold`.
   */
  step(which: (c: ConfirmSeen) => boolean): { next(): number; open(): void; readonly waiting: number } {
    if (this.stepGate) throw new Error("WirePublishes: a stepper is already active");
    this.stepMatch = which;
    this.stepEngaged = false;
    const gate = this.proxy.stopAt("toClient", (f) => {
      const c = this.confirmOf.get(f);
      return !!c && c.passedAt === null && this.gatedConfirms.includes(c);
    });
    this.stepGate = gate;
    const self = this;
    return {
      next(): number {
        const current = self.gatedConfirms.shift();
        if (!current) return 0;
        current.passedAt = performance.now();
        if (self.gatedConfirms.length === 0) self.stepEngaged = false;
        gate.moveTo((f) => {
          const c = self.confirmOf.get(f);
          return !!c && c !== current && self.gatedConfirms.includes(c);
        });
        self.changed();
        return self.gatedConfirms.length;
      },
      open(): void {
        const now = performance.now();
        for (const c of self.gatedConfirms.splice(0)) c.passedAt = now;
        self.stepEngaged = false;
        self.stepMatch = null;
        self.stepGate = null;
        gate.open();
        self.changed();
      },
      get waiting(): number {
        return self.gatedConfirms.length;
      },
    };
  }

  // ------------------------------------------------------------------ reading frames

  private state(f: AmqpFrame): ChannelState {
    const k = chanKey(f);
    let s = this.channels.get(k);
    if (!s) this.channels.set(k, (s = { confirming: false, nextTag: 1, unconfirmed: new Map(), body: null }));
    return s;
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }

  private fromClient(f: AmqpFrame): void {
    if (isMethod(f, 20, 10)) {
      // channel.open: a number reused after a close counts from 1 again.
      this.channels.delete(chanKey(f));
      this.state(f);
    } else if (isMethod(f, 85, 10)) {
      this.state(f).confirming = true;
    } else if (isMethod(f, 60, 40)) {
      const s = this.state(f);
      const args = decodePublish(f) ?? { exchange: "?", routingKey: "?", mandatory: false };
      const p: WirePublish = {
        link: f.link,
        channel: f.channel,
        tag: s.confirming ? s.nextTag++ : 0,
        index: this.publishes.length + 1,
        ...args,
        at: performance.now(),
        properties: null,
        headers: null,
        body: null,
        confirm: null,
        frame: f,
      };
      if (p.tag) s.unconfirmed.set(p.tag, p);
      this.publishes.push(p);
      s.body = { p, size: -1, chunks: [], got: 0 };
    } else if (f.type === 2) {
      const s = this.state(f);
      if (s.body && s.body.size < 0) {
        const h = decodeContentHeader(f);
        s.body.size = h?.bodySize ?? 0;
        s.body.p.properties = h?.properties ?? {};
        s.body.p.headers = decodeMessageHeaders(f);
        if (s.body.size === 0) this.bodyDone(s);
      }
    } else if (f.type === 3) {
      const s = this.state(f);
      if (s.body && s.body.size >= 0) {
        const payload = f.raw.subarray(7, f.raw.length - 1);
        s.body.chunks.push(payload);
        s.body.got += payload.length;
        if (s.body.got >= s.body.size) this.bodyDone(s);
      }
    }
    this.changed();
  }

  private bodyDone(s: ChannelState): void {
    const b = s.body!;
    s.body = null;
    b.p.body = Buffer.concat(b.chunks);
    for (const fn of this.publishListeners) fn(b.p);
  }

  private fromBroker(f: AmqpFrame): void {
    if (isConfirm(f)) {
      this.confirm(f);
    } else if (f.type === 1 && f.classId === 60 && (f.methodId === 60 || f.methodId === 71)) {
      this.awaitingDeliveryHeader.set(chanKey(f), f);
      this.decideOther(f);
    } else if (f.type === 2 && this.awaitingDeliveryHeader.has(chanKey(f))) {
      const deliver = this.awaitingDeliveryHeader.get(chanKey(f))!;
      this.awaitingDeliveryHeader.delete(chanKey(f));
      const headers = decodeMessageHeaders(f);
      this.deliveryHeaders.set(deliver, headers);
      for (const fn of this.deliveryListeners) fn(deliver, headers);
      this.decideOther(f);
    } else {
      if (isMethod(f, 20, 40) || isMethod(f, 20, 41)) {
        // A closed channel: its numbering starts again, and nothing more is confirmed on it.
        this.channels.delete(chanKey(f));
      }
      this.decideOther(f);
    }
    this.changed();
  }

  private confirm(f: AmqpFrame): void {
    const tag = Number(f.raw.readBigUInt64BE(11));
    const multiple = (f.raw[19]! & 1) === 1;
    const s = this.state(f);
    const covered = multiple ? [...s.unconfirmed.values()].filter((p) => p.tag <= tag) : s.unconfirmed.has(tag) ? [s.unconfirmed.get(tag)!] : [];
    const c: ConfirmSeen = { how: f.methodId === 120 ? "nack" : "ack", frame: f, link: f.link, channel: f.channel, tag, multiple, at: performance.now(), covered, passedAt: null };
    if (c.how === "ack" && this.refuseRule?.(c)) {
      // basic.ack and basic.nack carry the same arguments (a delivery tag, then a bit field
      // whose first bit is multiple; nack's second, requeue, stays 0): only the method id differs.
      // The proxy forwards this very buffer, after every tap has seen it.
      f.raw.writeUInt16BE(120, 9);
      f.methodId = 120;
      c.how = "nack";
      c.refused = true;
    }
    for (const p of covered) {
      p.confirm = c;
      s.unconfirmed.delete(p.tag);
    }
    this.confirms.push(c);
    this.confirmOf.set(f, c);
    for (const fn of this.confirmListeners) fn(c);
    // Held (hold rule or stepper) or passed straight through.
    let held = false;
    if (this.rule !== null) {
      held = this.heldChannels.has(chanKey(f)) || this.rule(c);
      if (held) {
        this.heldChannels.add(chanKey(f));
        this.heldConfirms.push(c);
      }
      this.decided.set(f, held);
    }
    if (this.stepMatch !== null && (this.stepEngaged ? f.link === this.stepLink : this.stepMatch(c))) {
      // The gate stops at the first confirm it matches and holds everything after it on that connection.
      this.stepEngaged = true;
      this.stepLink = f.link;
      this.gatedConfirms.push(c);
      held = true;
    }
    if (!held) c.passedAt = c.at;
  }

  private decideOther(f: AmqpFrame): boolean {
    const held = this.rule !== null && f.channel !== 0 && this.heldChannels.has(chanKey(f));
    this.decided.set(f, held);
    return held;
  }
}
