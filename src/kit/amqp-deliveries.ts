/**
 * What a consumer received and how it settled it, read off a ChaosProxy's wire: every
 * basic.deliver (and basic.get-ok) the broker sent through the proxy, with its message id from
 * the content header, and the ack, nack, reject, recover or close that settled it. An ack with
 * `multiple` settles every outstanding delivery of its channel up to its tag (tag 0: all of
 * them), so settlements are counted the way the broker counts them, however the client batches.
 *
 * Times are the proxy's: a delivery is recorded when it reaches the proxy from the broker (the
 * broker counts it as sent from then, even while a gate still holds it), a settlement when it
 * reaches the proxy from the client (before any gate or hold decides whether it goes on).
 * Listeners run synchronously in the proxy's tap, before a gate sees the same frame.
 */
import { decodeContentHeader, decodeMethod, type AmqpMethod } from "./amqp-methods.ts";
import type { AmqpFrame, ChaosProxy } from "./proxy.ts";

export type SettleHow = "ack" | "nack" | "reject" | "recover" | "closed" | "auto";

export interface Settlement {
  how: SettleHow;
  /** Whether the broker puts the message back in the queue (nack/reject with requeue, recover, close). */
  requeue: boolean;
  /** The frame that settled it (for "auto": the delivery itself). */
  frame: AmqpFrame;
  /** The method's own delivery tag and multiple flag (what the client sent). */
  tag: number;
  multiple: boolean;
}

export interface Delivery {
  link: number;
  channel: number;
  tag: number;
  /** 1-based, in the order deliveries reached the proxy on this connection. */
  index: number;
  /** Null for basic.get-ok. */
  consumerTag: string | null;
  redelivered: boolean;
  /** From the content header; undefined until it has arrived, or if the message has none. */
  messageId: string | undefined;
  frame: AmqpFrame;
  settled: Settlement | null;
}

/** A channel-level request the client made, in wire order. */
export interface ClientRequest<M extends AmqpMethod["name"]> {
  link: number;
  channel: number;
  method: Extract<AmqpMethod, { name: M }>;
  /** Whether a basic.consume had already been sent on that channel. */
  afterConsume: boolean;
}

const key = (link: number, channel: number) => `${link}:${channel}`;

export class WireDeliveries {
  readonly deliveries: Delivery[] = [];
  readonly qos: ClientRequest<"basic.qos">[] = [];
  readonly consumes: ClientRequest<"basic.consume">[] = [];
  readonly cancels: ClientRequest<"basic.cancel">[] = [];
  /** Channel and connection closes, from either side, with the reply code and text. */
  readonly closes: { link: number; channel: number; by: "client" | "broker"; method: Extract<AmqpMethod, { name: "channel.close" | "connection.close" }> }[] = [];
  /** Settlements naming a tag that was not outstanding (the broker closes the channel for those). */
  readonly unknownTags: { link: number; channel: number; method: AmqpMethod; frame: AmqpFrame }[] = [];

  private readonly byFrame = new WeakMap<AmqpFrame, Delivery[]>();
  private readonly deliverFrames = new WeakMap<AmqpFrame, Delivery>();
  private readonly awaitingHeader = new Map<string, Delivery>();
  private readonly perLink = new Map<number, number>();
  private readonly consumed = new Set<string>();
  /** consume requests waiting for their consume-ok, per channel, and the no-ack consumer tags. */
  private readonly pendingConsumes = new Map<string, ClientRequest<"basic.consume">[]>();
  private readonly noAckTags = new Set<string>();
  private readonly pendingGets = new Map<string, boolean[]>();
  private readonly autoAcked = new Set<Delivery>();
  private readonly deliverListeners: ((d: Delivery) => void)[] = [];
  private readonly settleListeners: ((settled: Delivery[], s: Settlement) => void)[] = [];
  private readonly frameListeners: ((f: AmqpFrame, m: AmqpMethod | null, from: "client" | "broker") => void)[] = [];

  constructor(proxy: ChaosProxy) {
    proxy.tap("toClient", (f) => this.fromBroker(f));
    proxy.tap("toBroker", (f) => this.fromClient(f));
  }

  /** Called once a delivery's content header has arrived (so its message id is known). */
  onDeliver(fn: (d: Delivery) => void): void {
    this.deliverListeners.push(fn);
  }

  /** Called for every frame that settles at least one delivery, with what it settled. */
  onSettle(fn: (settled: Delivery[], s: Settlement) => void): void {
    this.settleListeners.push(fn);
  }

  /** Called for every frame, after the tracker has read it. */
  onFrame(fn: (f: AmqpFrame, m: AmqpMethod | null, from: "client" | "broker") => void): void {
    this.frameListeners.push(fn);
  }

  /** The delivery a basic.deliver / basic.get-ok frame carried. */
  deliveryOf(f: AmqpFrame): Delivery | undefined {
    return this.deliverFrames.get(f);
  }

  /** What a settling frame settled (empty for any other frame). */
  settledBy(f: AmqpFrame): Delivery[] {
    return this.byFrame.get(f) ?? [];
  }

  /** Deliveries not settled yet, optionally of one connection. */
  outstanding(link?: number): Delivery[] {
    return this.deliveries.filter((d) => d.settled === null && (link === undefined || d.link === link));
  }

  on(link: number): Delivery[] {
    return this.deliveries.filter((d) => d.link === link);
  }

  private fromBroker(f: AmqpFrame): void {
    const k = key(f.link, f.channel);
    if (f.type === 2) {
      const d = this.awaitingHeader.get(k);
      if (d) {
        this.awaitingHeader.delete(k);
        d.messageId = decodeContentHeader(f)?.properties.messageId;
        for (const fn of this.deliverListeners) fn(d);
        // A no-ack delivery is settled as it is sent: the broker has already forgotten it.
        if (this.autoAcked.delete(d)) this.settle([d], { how: "auto", requeue: false, frame: d.frame, tag: d.tag, multiple: false });
      }
      this.emitFrame(f, null, "broker");
      return;
    }
    const m = decodeMethod(f);
    if (m?.name === "basic.deliver" || m?.name === "basic.get-ok") {
      const index = (this.perLink.get(f.link) ?? 0) + 1;
      this.perLink.set(f.link, index);
      const d: Delivery = {
        link: f.link,
        channel: f.channel,
        tag: m.deliveryTag,
        index,
        consumerTag: m.name === "basic.deliver" ? m.consumerTag : null,
        redelivered: m.redelivered,
        messageId: undefined,
        frame: f,
        settled: null,
      };
      this.deliveries.push(d);
      this.deliverFrames.set(f, d);
      this.awaitingHeader.set(k, d);
      const auto = m.name === "basic.deliver" ? this.noAckTags.has(`${k}:${m.consumerTag}`) : (this.pendingGets.get(k)?.shift() ?? false);
      if (auto) this.autoAcked.add(d);
    } else if (m?.name === "basic.consume-ok") {
      const req = this.pendingConsumes.get(k)?.shift();
      if (req?.method.noAck) this.noAckTags.add(`${k}:${m.consumerTag}`);
    } else if (m?.name === "channel.close" || m?.name === "connection.close") {
      this.closes.push({ link: f.link, channel: f.channel, by: "broker", method: m });
      this.closeChannel(f, m.name === "connection.close");
    } else if (m?.name === "basic.get-empty") {
      this.pendingGets.get(k)?.shift();
    }
    this.emitFrame(f, m, "broker");
  }

  private fromClient(f: AmqpFrame): void {
    const m = decodeMethod(f);
    const k = key(f.link, f.channel);
    if (!m) {
      this.emitFrame(f, m, "client");
      return;
    }
    const afterConsume = this.consumed.has(k);
    switch (m.name) {
      case "basic.qos":
        this.qos.push({ link: f.link, channel: f.channel, method: m, afterConsume });
        break;
      case "basic.consume": {
        const req = { link: f.link, channel: f.channel, method: m, afterConsume };
        this.consumes.push(req);
        this.consumed.add(k);
        if (m.noWait) {
          if (m.noAck) this.noAckTags.add(`${k}:${m.consumerTag}`);
        } else {
          const list = this.pendingConsumes.get(k) ?? [];
          list.push(req);
          this.pendingConsumes.set(k, list);
        }
        break;
      }
      case "basic.get": {
        const list = this.pendingGets.get(k) ?? [];
        list.push(m.noAck);
        this.pendingGets.set(k, list);
        break;
      }
      case "basic.cancel":
        this.cancels.push({ link: f.link, channel: f.channel, method: m, afterConsume });
        break;
      case "basic.ack":
      case "basic.nack":
      case "basic.reject": {
        const multiple = m.name !== "basic.reject" && m.multiple;
        const requeue = m.name !== "basic.ack" && m.requeue;
        const open = this.deliveries.filter((d) => d.link === f.link && d.channel === f.channel && d.settled === null);
        const hit = multiple ? open.filter((d) => m.deliveryTag === 0 || d.tag <= m.deliveryTag) : open.filter((d) => d.tag === m.deliveryTag);
        if (hit.length === 0 && !(multiple && m.deliveryTag === 0)) this.unknownTags.push({ link: f.link, channel: f.channel, method: m, frame: f });
        const how = m.name === "basic.ack" ? "ack" : m.name === "basic.nack" ? "nack" : "reject";
        this.settle(hit, { how, requeue, frame: f, tag: m.deliveryTag, multiple });
        break;
      }
      case "basic.recover": {
        const open = this.deliveries.filter((d) => d.link === f.link && d.channel === f.channel && d.settled === null);
        this.settle(open, { how: "recover", requeue: true, frame: f, tag: 0, multiple: true });
        break;
      }
      case "channel.close":
      case "connection.close":
        this.closes.push({ link: f.link, channel: f.channel, by: "client", method: m });
        this.closeChannel(f, m.name === "connection.close");
        break;
      default:
        break;
    }
    this.emitFrame(f, m, "client");
  }

  /** A closed channel (or connection) gives its unacked deliveries back to the queue. */
  private closeChannel(f: AmqpFrame, wholeConnection: boolean): void {
    const open = this.deliveries.filter((d) => d.link === f.link && (wholeConnection || d.channel === f.channel) && d.settled === null);
    this.settle(open, { how: "closed", requeue: true, frame: f, tag: 0, multiple: true });
  }

  private settle(hit: Delivery[], s: Settlement): void {
    for (const d of hit) d.settled = s;
    if (hit.length === 0) return;
    this.byFrame.set(s.frame, [...(this.byFrame.get(s.frame) ?? []), ...hit]);
    for (const fn of this.settleListeners) fn(hit, s);
  }

  private emitFrame(f: AmqpFrame, m: AmqpMethod | null, from: "client" | "broker"): void {
    for (const fn of this.frameListeners) fn(f, m, from);
  }
}
