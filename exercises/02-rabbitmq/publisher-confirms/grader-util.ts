/**
 * The publisher-confirms grader's world: the learner's connection (built in the host, through
 * the grader's proxy), the grader's own view of the broker, the confirms decoded from the wire,
 * and the learner's publish() calls watched from outside.
 */
import { isDeepStrictEqual } from "node:util";
import amqp from "amqplib";
import type { Channel, ChannelModel, GetMessage } from "amqplib";
import { CheckFailure, LabError, amqpCode, describeValue, isConfirm, Pulse } from "../../../src/kit/index.ts";
import type { AmqpFrame, ChaosProxy, CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { DomainEvent, Publisher, PublisherConfirmsSubmission, PublisherOptions } from "../../../src/contracts/publisher-confirms.ts";

export type T = CheckContext<PublisherConfirmsSubmission>;

/** A connection living in the learner's host (an amqplib ChannelModel there); only passed back. */
export type RemoteConnection = object;

// ---------------------------------------------------------------- waiting on events

// ---------------------------------------------------------------- the grader's own view

/** The grader's own connection: declares its queues, binds them, counts and reads messages. */
export class Observer {
  private ch: Channel | undefined;
  private constructor(private readonly conn: ChannelModel) {}

  static async open(t: T): Promise<Observer> {
    let conn: ChannelModel;
    try {
      // noDelay: without it every handshake step waits on Nagle's algorithm (about 40 ms each).
      conn = await amqp.connect(t.amqpUrl, { noDelay: true });
    } catch (e) {
      throw new LabError(`RabbitMQ is not reachable (${(e as Error).message}): run \`msglab up\`.`);
    }
    conn.on("error", () => {});
    t.defer(() => conn.close().catch(() => {}));
    return new Observer(conn);
  }

  /** A channel for one operation that may close it (a passive declare, a failed bind). */
  async throwaway(): Promise<Channel> {
    const ch = await this.conn.createChannel();
    ch.on("error", () => {});
    return ch;
  }

  private async channel(): Promise<Channel> {
    if (!this.ch) {
      const ch = await this.throwaway();
      ch.on("close", () => {
        if (this.ch === ch) this.ch = undefined;
      });
      this.ch = ch;
    }
    return this.ch;
  }

  /**
   * Declares a grader queue and binds it to the learner's exchange. A missing exchange is the
   * learner's bug: createPublisher() must have declared it before it resolved.
   */
  async queue(t: T, queue: string, exchange: string, patterns: string[], args?: Record<string, unknown>): Promise<void> {
    const ch = await this.throwaway();
    await ch.assertQueue(queue, { durable: false, ...(args ? { arguments: args } : {}) });
    for (const p of patterns) {
      try {
        await ch.bindQueue(queue, exchange, p);
      } catch (e) {
        if (amqpCode(e) === 404) {
          t.fail(`After createPublisher(conn, "${exchange}") resolved, the grader could not bind a queue to that exchange: the broker says ${brokerWords(e)}. createPublisher() must declare the exchange before it resolves.`);
        }
        throw e;
      }
    }
    await ch.close().catch(() => {});
  }

  /** A queue that refuses every message routed to it (x-overflow reject-publish, full): the broker nacks them. */
  async fullQueue(t: T, queue: string, exchange: string, pattern: string): Promise<void> {
    await this.queue(t, queue, exchange, [pattern], { "x-overflow": "reject-publish", "x-max-length": 1 });
    const ch = await this.conn.createConfirmChannel();
    ch.on("error", () => {});
    ch.sendToQueue(queue, Buffer.from("grader filler"), { persistent: true });
    await ch.waitForConfirms();
    await ch.close().catch(() => {});
  }

  /** Ready messages in the queue. */
  async count(queue: string): Promise<number> {
    return (await (await this.channel()).checkQueue(queue)).messageCount;
  }

  async purge(queue: string): Promise<void> {
    await (await this.channel()).purgeQueue(queue);
  }

  /**
   * Waits (briefly) until `n` messages are ready, then takes them all. The wait matters only for
   * code that resolves before the broker has the message; the confirm checks judge that.
   */
  async collect(queue: string, n: number): Promise<GetMessage[]> {
    const until = Date.now() + 2000;
    while ((await this.count(queue)) < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    return this.drain(queue);
  }

  /** Takes every ready message out of the queue (basic.get, auto-ack). */
  async drain(queue: string): Promise<GetMessage[]> {
    const ch = await this.channel();
    const out: GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (m === false) return out;
      out.push(m);
    }
  }

  /**
   * Pulls the exchange from under the learner's feet: deletes it (its bindings go with it; the
   * queues stay) and declares it again as an internal exchange. No client may publish to an
   * internal exchange, nor re-declare it as a plain one: the broker answers either with a
   * channel error (403 ACCESS_REFUSED, 406 PRECONDITION_FAILED), whatever the learner's code
   * does about it.
   */
  async sealExchange(exchange: string): Promise<void> {
    const ch = await this.throwaway();
    await ch.deleteExchange(exchange, { ifUnused: false });
    await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: true });
    await ch.close().catch(() => {});
  }

  /** Whether the exchange exists (a passive declare on a throwaway channel). */
  async exchangeExists(exchange: string): Promise<boolean> {
    const ch = await this.throwaway();
    try {
      await ch.checkExchange(exchange);
      await ch.close().catch(() => {});
      return true;
    } catch (e) {
      if (amqpCode(e) === 404) return false;
      throw e;
    }
  }
}

/** The broker's own words from an amqplib channel error. */
export function brokerWords(e: unknown): string {
  const m = /with message "([^"]*)"/.exec(String((e as Error)?.message ?? e));
  return m ? m[1]! : String((e as Error)?.message ?? e);
}

// ---------------------------------------------------------------- the wire

/** One message the learner published, as the proxy saw it, with the broker's answer. */
export interface Wired {
  channel: number;
  /** Delivery tag on its channel (1, 2, …), or 0 when the channel is not in confirm mode. */
  tag: number;
  /** The event's eventRef, read from the body; null until the body has crossed. */
  ref: string | null;
  confirm: "ack" | "nack" | null;
  /** Whether the frame that confirmed it was held at the proxy (until a release). */
  held: boolean;
  /** When that frame reached the proxy (performance.now()), and its delivery tag and multiple flag. */
  answeredAt: number | null;
  frameTag: number;
  frameMultiple: boolean;
  /** The broker closed its channel before answering for it: the reply code and text of that channel.close. */
  closedBy: BrokerClose | null;
}

/** A channel.close the broker sent on the learner's connection, and whether it has reached the learner's code (it may wait behind held confirms). */
export interface BrokerClose {
  channel: number;
  code: number;
  text: string;
  reachedClient: boolean;
}

interface ChannelState {
  /** The broker closed this channel (a channel error): what is published on it from now on is discarded. */
  closed: BrokerClose | null;
  confirming: boolean;
  nextTag: number;
  byTag: Map<number, Wired>;
  body: { wired: Wired; size: number; chunks: Buffer[]; got: number } | null;
}

/**
 * The learner's traffic decoded from the proxy: which message got which delivery tag (counted
 * from confirm.select, per channel, as the broker counts), and what the broker answered for it
 * (basic.ack / basic.nack, `multiple` expanded). It also decides which confirms the proxy holds,
 * so it knows for each message whether its confirm reached the learner's code.
 */
export class ConfirmLedger {
  acked = 0;
  nacked = 0;
  /** Confirm frames that settled two or more messages at once (basic.ack/nack with multiple). */
  coalesced = 0;
  /** Every basic.publish on the wire, confirm mode or not. */
  readonly wired: Wired[] = [];
  private readonly channels = new Map<number, ChannelState>();
  private readonly byRef = new Map<string, Wired>();
  private rule: ((f: AmqpFrame, covers: Wired[]) => boolean) | null = null;
  private readonly decided = new WeakMap<AmqpFrame, boolean>();
  /** Channels with a frame held right now: what follows on them waits too. */
  private readonly heldChannels = new Set<number>();
  /** Every channel.close the broker sent the learner (a channel error), in order. */
  readonly brokerCloses: BrokerClose[] = [];

  constructor(
    private readonly proxy: ChaosProxy,
    private readonly pulse: Pulse,
  ) {
    proxy.tap("toBroker", (f) => this.fromClient(f));
    proxy.tap("toClient", (f) => {
      if (isConfirm(f)) this.confirm(f);
      else {
        const held = this.decideOther(f);
        if (f.type === 1 && f.classId === 20 && f.methodId === 40) this.brokerClosed(f, held);
      }
    });
  }

  /**
   * Holds the broker's confirms (those `which` picks, by the messages they settle) until
   * release(). Frames that follow a held one on its channel (a channel.close-ok, say) are held
   * behind it, so each channel's frames still arrive in the order the broker sent them: a
   * confirm after its channel's close-ok is something no broker does.
   */
  hold(which?: (covers: Wired[], channel: number) => boolean): void {
    this.rule = (f, covers) => (which ? which(covers, f.channel) : true);
    this.proxy.hold("toClient", (f) => this.decided.get(f) ?? (isConfirm(f) ? this.decide(f, this.covers(f)) : this.decideOther(f)));
  }

  /** Whether confirms are being held right now. */
  get holding(): boolean {
    return this.rule !== null;
  }

  /** Lets every held confirm go, in order, and holds nothing more. */
  release(): void {
    this.rule = null;
    this.heldChannels.clear();
    for (const c of this.brokerCloses) c.reachedClient = true;
    this.proxy.release();
  }

  /** What the wire says about the message carrying this event. */
  of(event: DomainEvent): Wired | undefined {
    return this.byRef.get(String(event.eventRef));
  }

  /** "delivery tag 4 on channel 1", or what is known instead. */
  describeTag(event: DomainEvent): string {
    const w = this.of(event);
    if (!w) return "its message had not crossed the proxy";
    if (w.tag === 0) return `its message went out on channel ${w.channel}, which is not in confirm mode`;
    return `delivery tag ${w.tag} on channel ${w.channel}`;
  }

  private state(f: AmqpFrame): ChannelState {
    const key = chanKey(f);
    let s = this.channels.get(key);
    if (!s) this.channels.set(key, (s = { closed: null, confirming: false, nextTag: 1, byTag: new Map(), body: null }));
    return s;
  }

  private fromClient(f: AmqpFrame): void {
    if (f.type === 1 && f.classId === 20 && f.methodId === 10) {
      // channel.open: the number may be reused after a close; counting starts again.
      this.channels.delete(chanKey(f));
      this.state(f);
      return;
    }
    const s = this.state(f);
    if (f.type === 1 && f.classId === 85 && f.methodId === 10) {
      s.confirming = true;
      return;
    }
    if (f.type === 1 && f.classId === 60 && f.methodId === 40) {
      const wired: Wired = { channel: f.channel, tag: s.confirming ? s.nextTag++ : 0, ref: null, confirm: null, held: false, answeredAt: null, frameTag: 0, frameMultiple: false, closedBy: s.closed };
      if (wired.tag) s.byTag.set(wired.tag, wired);
      this.wired.push(wired);
      s.body = { wired, size: -1, chunks: [], got: 0 };
      return;
    }
    if (f.type === 2 && s.body && s.body.size < 0) {
      // Content header: class id (2), weight (2), body size (8), then the properties.
      s.body.size = Number(f.raw.readBigUInt64BE(11));
      if (s.body.size === 0) this.bodyDone(s);
      return;
    }
    if (f.type === 3 && s.body && s.body.size >= 0) {
      const payload = f.raw.subarray(7, f.raw.length - 1);
      s.body.chunks.push(payload);
      s.body.got += payload.length;
      if (s.body.got >= s.body.size) this.bodyDone(s);
    }
  }

  private bodyDone(s: ChannelState): void {
    const b = s.body!;
    s.body = null;
    try {
      const ref = (JSON.parse(Buffer.concat(b.chunks).toString("utf8")) as { eventRef?: unknown }).eventRef;
      if (typeof ref === "string") {
        b.wired.ref = ref;
        this.byRef.set(ref, b.wired);
      }
    } catch {
      // Not one of the grader's events (or not JSON): the checks say so from the queue.
    }
    this.pulse.poke();
  }

  /** The messages a confirm frame settles: its tag, or with `multiple` every unconfirmed tag up to it. */
  private covers(f: AmqpFrame): Wired[] {
    const tag = Number(f.raw.readBigUInt64BE(11));
    const multiple = (f.raw[19]! & 1) === 1;
    const s = this.state(f);
    if (!multiple) {
      const w = s.byTag.get(tag);
      return w && !w.confirm ? [w] : [];
    }
    return [...s.byTag.values()].filter((w) => w.tag <= tag && !w.confirm);
  }

  private decide(f: AmqpFrame, covers: Wired[]): boolean {
    const held = this.rule !== null && (this.heldChannels.has(chanKey(f)) || this.rule(f, covers));
    if (held) this.heldChannels.add(chanKey(f));
    this.decided.set(f, held);
    return held;
  }

  private decideOther(f: AmqpFrame): boolean {
    const held = this.rule !== null && f.channel !== 0 && this.heldChannels.has(chanKey(f));
    this.decided.set(f, held);
    return held;
  }

  /** A channel.close from the broker: every message on that channel still unanswered never will be. */
  private brokerClosed(f: AmqpFrame, held: boolean): void {
    // Arguments: reply-code (short), reply-text (shortstr), class-id, method-id.
    const code = f.raw.readUInt16BE(11);
    const text = f.raw.subarray(14, 14 + f.raw[13]!).toString("utf8");
    const close: BrokerClose = { channel: f.channel, code, text, reachedClient: !held };
    this.brokerCloses.push(close);
    const s = this.state(f);
    s.closed = close;
    for (const w of s.byTag.values()) if (!w.confirm && !w.closedBy) w.closedBy = s.closed;
    this.pulse.poke();
  }

  private confirm(f: AmqpFrame): void {
    // The tap runs before the proxy asks its hold rule, on the same frame: decide once, here.
    const covers = this.covers(f);
    const held = this.decide(f, covers);
    const kind = f.methodId === 120 ? "nack" : "ack";
    const at = performance.now();
    const frameTag = Number(f.raw.readBigUInt64BE(11));
    const frameMultiple = (f.raw[19]! & 1) === 1;
    for (const w of covers) {
      w.confirm = kind;
      w.held = held;
      w.answeredAt = at;
      w.frameTag = frameTag;
      w.frameMultiple = frameMultiple;
      if (kind === "nack") this.nacked++;
      else this.acked++;
    }
    if (covers.length >= 2) this.coalesced++;
    this.pulse.poke();
  }
}

/** A channel of one connection: frames carry their connection (`link`) where the proxy says it. */
function chanKey(f: AmqpFrame): number {
  const link = (f as { link?: unknown }).link;
  return (typeof link === "number" ? link : 0) * 65536 + f.channel;
}

/** Frames on the learner's connection, as the proxy saw them. */
export function frames(proxy: ChaosProxy, direction: "toBroker" | "toClient", classId: number, methodId: number): number {
  return proxy.seen.filter((s) => s.direction === direction && s.frame.type === 1 && s.frame.classId === classId && s.frame.methodId === methodId).length;
}

// ---------------------------------------------------------------- the learner's side

/** The learner's connection, built in its host: straight to the broker, or through the proxy. */
export async function learnerConnection(t: T, host: Host, proxy?: ChaosProxy): Promise<RemoteConnection> {
  const url = proxy ? proxy.urlFor(t.amqpUrl) : t.amqpUrl;
  try {
    return await host.cap<RemoteConnection>("amqp.connection", { url });
  } catch (e) {
    throw new LabError(`Could not connect to RabbitMQ${proxy ? " through the grader's proxy" : ""} (${(e as Error).message}): run \`msglab doctor\`.`);
  }
}

export async function newPublisher(t: T, host: Host, conn: RemoteConnection, exchange: string, options?: PublisherOptions): Promise<Publisher> {
  const args: unknown[] = options ? [conn, exchange, options] : [conn, exchange];
  const pub = await t.within("createPublisher()", 5000, host.call<Publisher>("createPublisher", ...args));
  if (!pub || typeof pub.publish !== "function" || typeof pub.close !== "function") {
    t.fail(`createPublisher() resolved to ${describeValue(pub)}; it must resolve to an object with publish() and close() methods.`);
  }
  return pub;
}

/** One publish() call, watched from outside: its state is what the learner's promise did, and when. */
export class Call {
  state: "pending" | "resolved" | "rejected" = "pending";
  value: unknown;
  error: unknown;
  readonly startedAt = performance.now();
  settledAt: number | null = null;
  readonly settled: Promise<void>;

  constructor(
    /** How messages name it: "#3", "A2". */
    readonly label: string,
    readonly key: string,
    readonly event: DomainEvent,
    pub: Publisher,
    pulse: Pulse,
  ) {
    // The executor runs publish() right now and turns a synchronous throw into a rejection.
    this.settled = new Promise((resolve) => resolve(pub.publish(key, event))).then(
      (v) => {
        this.settledAt = performance.now();
        this.state = "resolved";
        this.value = v;
        pulse.poke();
      },
      (e: unknown) => {
        this.settledAt = performance.now();
        this.state = "rejected";
        this.error = e;
        pulse.poke();
      },
    );
  }

  get ref(): string {
    return String(this.event.eventRef);
  }

  /** Milliseconds from the call to its settling (or to now, while pending). */
  get elapsed(): number {
    return (this.settledAt ?? performance.now()) - this.startedAt;
  }

  /** "resolved 3 ms after the call", "rejected with "…" 2012 ms after the call". */
  get outcome(): string {
    if (this.state === "pending") return `still pending ${ms(this.elapsed)} after the call`;
    if (this.state === "resolved") return `resolved ${ms(this.elapsed)} after the call`;
    return `rejected with ${errText(this.error)} ${ms(this.elapsed)} after the call`;
  }
}

export const ms = (x: number) => `${Math.round(x)} ms`;

export function errText(e: unknown): string {
  return describeValue(e instanceof Error ? e.message : e);
}

export async function settleAll(t: T, calls: Call[], timeoutMs: number, what: string): Promise<void> {
  await t.within(what, timeoutMs, Promise.all(calls.map((c) => c.settled)));
}

/** The messageId a resolved publish() reported; fails unless it is `{ messageId: non-empty string }`. */
export function receiptId(t: T, call: Call): string {
  const v = call.value as { messageId?: unknown } | null | undefined;
  if (!v || typeof v !== "object" || typeof v.messageId !== "string" || v.messageId === "") {
    t.fail(`publish("${call.key}", …) resolved to ${describeValue(call.value)}; it must resolve to { messageId } with the id of the message it published.`);
  }
  return v.messageId;
}

/** Resolves or fails: a rejected call here means the learner's publish failed with nothing wrong. */
export function mustHaveResolved(t: T, call: Call, context: string): string {
  if (call.state === "rejected") t.fail(`publish("${call.key}", …) rejected with ${errText(call.error)}${context}`);
  if (call.state !== "resolved") t.fail(`publish("${call.key}", …) had not settled${context}`);
  return receiptId(t, call);
}

/** Publishes one by one, each awaited: the steady state before a fault. Every one must resolve. */
export async function publishInTurn(t: T, pub: Publisher, pulse: Pulse, key: string, events: DomainEvent[], label = "#"): Promise<Call[]> {
  const calls: Call[] = [];
  for (const [i, e] of events.entries()) {
    const c = new Call(`${label}${i + 1}`, key, e, pub, pulse);
    await settleAll(t, [c], 5000, `publish("${key}", …) with nothing held back`);
    mustHaveResolved(t, c, " with nothing held back or refused: the broker acked its message.");
    calls.push(c);
  }
  return calls;
}

// ---------------------------------------------------------------- events

const ENTITIES = ["order", "payment", "shipment", "invoice"] as const;
const ACTIONS = ["created", "updated", "cancelled", "settled"] as const;
const REGIONS = ["eu", "us", "apac"] as const;
const SKUS = ["bolt-m4", "gear-12", "belt-800", "valve-3/4", "fuse-10a"];
const NOTES = ["", "gift wrap", "leave at the door ✓", "Zürich depot", 'rush "today"'];

export interface Key {
  entity: string;
  action: string;
  region: string;
}
export const keyText = (k: Key) => `${k.entity}.${k.action}.${k.region}`;

export function randomKey(rng: Rng): Key {
  return { entity: rng.pick(ENTITIES), action: rng.pick(ACTIONS), region: rng.pick(REGIONS) };
}

/** Two different routing keys. */
export function twoKeys(rng: Rng): [string, string] {
  const a = keyText(randomKey(rng));
  let b = keyText(randomKey(rng));
  while (b === a) b = keyText(randomKey(rng));
  return [a, b];
}

function tag(rng: Rng): string {
  return Math.floor(rng.next() * 0xffffffff)
    .toString(16)
    .padStart(8, "0");
}

/** A distinct event: its `eventRef` names it in messages, and no two are equal. */
export function makeEvent(rng: Rng, n: number | string, type = "OrderPlaced"): DomainEvent {
  return {
    type,
    eventRef: `ev-${n}-${tag(rng)}`,
    orderId: `o-${tag(rng)}`,
    amount: rng.int(100, 999_999) / 100,
    currency: rng.pick(["EUR", "USD", "GBP"]),
    lines: Array.from({ length: rng.int(1, 3) }, () => ({ sku: rng.pick(SKUS), qty: rng.int(1, 50) })),
    note: rng.pick(NOTES),
    express: rng.next() < 0.5,
  };
}

export const refOf = (e: DomainEvent) => String(e.eventRef);

function parseBody(t: T, m: GetMessage): DomainEvent {
  const text = m.content.toString("utf8");
  try {
    return JSON.parse(text) as DomainEvent;
  } catch {
    t.fail(`A message on the exchange has a body that is not JSON: ${describeValue(text)}. The body must be JSON.stringify(event).`);
  }
}

/** Messages read back, each matched to the event it carries (by eventRef, then compared whole). */
export function matchMessages(t: T, msgs: GetMessage[], events: DomainEvent[], where: string): Map<string, GetMessage> {
  const byRef = new Map(events.map((e) => [refOf(e), e]));
  const out = new Map<string, GetMessage>();
  for (const m of msgs) {
    const body = parseBody(t, m);
    const sent = byRef.get(String(body?.eventRef));
    if (!sent) t.fail(`${where} holds a message the grader never published: ${describeValue(body)}.`);
    if (!isDeepStrictEqual(body, sent)) {
      t.fail(`${where}: the message for event ${refOf(sent)} carries ${describeValue(body)}, but the event published was ${describeValue(sent)}. The body must be exactly JSON.stringify(event).`);
    }
    const exact = Buffer.from(JSON.stringify(sent), "utf8");
    if (!m.content.equals(exact)) {
      t.fail(`${where}: the message for event ${refOf(sent)} carries the right value, but its body is ${describeValue(m.content.toString("utf8"))} (${m.content.length} bytes), not JSON.stringify(event) (${exact.length} bytes: ${describeValue(exact.toString("utf8"))}). The contract names the exact bytes: no indentation, the event's own key order.`);
    }
    if (out.has(refOf(sent))) t.fail(`${where} holds event ${refOf(sent)} twice, but publish() was called once for it.`);
    out.set(refOf(sent), m);
  }
  return out;
}

/** Each resolved call's receipt must be the messageId its message carries. */
export function receiptsMatch(t: T, calls: Call[], got: Map<string, GetMessage>, where: string): void {
  for (const c of calls) {
    if (c.state !== "resolved") continue;
    const id = receiptId(t, c);
    const m = got.get(c.ref);
    if (!m) t.fail(`publish("${c.key}", …) (call ${c.label}) resolved, but ${where} never received its event ${c.ref}.`);
    if (m.properties.messageId !== id) {
      t.fail(`publish("${c.key}", …) (call ${c.label}) resolved to messageId "${id}", but the message it published carries ${describeValue(m.properties.messageId)}.`);
    }
  }
}

// ---------------------------------------------------------------- a check's world

export interface World {
  host: Host;
  obs: Observer;
  exchange: string;
  pulse: Pulse;
  conn: RemoteConnection;
}

export interface ChaosWorld extends World {
  proxy: ChaosProxy;
  ledger: ConfirmLedger;
}

/** The learner's host and connection (straight to the broker), the grader's observer, an exchange name. */
export async function arrange(t: T): Promise<World> {
  const [host, obs] = await Promise.all([t.learnerHost(), Observer.open(t)]);
  const conn = await learnerConnection(t, host);
  return { host, obs, conn, exchange: t.names.exchange("events"), pulse: new Pulse() };
}

/** The same, with the learner's connection through the grader's proxy and its confirms decoded. */
export async function arrangeChaos(t: T): Promise<ChaosWorld> {
  const [host, obs, proxy] = await Promise.all([t.learnerHost(), Observer.open(t), t.proxy()]);
  const pulse = new Pulse();
  // Before the connection exists, so the ledger sees every frame from the first.
  const ledger = new ConfirmLedger(proxy, pulse);
  const conn = await learnerConnection(t, host, proxy);
  return { host, obs, conn, proxy, ledger, pulse, exchange: t.names.exchange("events") };
}

/** Where the message of a call stands on the wire, for a failure message. */
export function fate(ledger: ConfirmLedger, call: Call): string {
  const w = ledger.of(call.event);
  if (!w) return "its message had not even reached the proxy";
  if (w.tag === 0) return `its message went out on channel ${w.channel}, which is not in confirm mode, so the broker never answers for it`;
  if (!w.confirm && w.closedBy) return `the broker closed its channel (${w.closedBy.code} ${w.closedBy.text}) without answering for its message (delivery tag ${w.tag} on channel ${w.channel})`;
  if (!w.confirm) return `the broker had not answered for its message (delivery tag ${w.tag}) yet`;
  const where = w.held ? (ledger.holding ? "was held at the proxy" : "had been held at the proxy, then let through") : "had reached your connection";
  const frame = w.frameTag !== w.tag ? `, in basic.${w.confirm} for delivery tag ${w.frameTag} with multiple set (it answers for every unconfirmed tag up to ${w.frameTag}),` : "";
  return `the broker's ${w.confirm} for its message (delivery tag ${w.tag})${frame} ${where}`;
}
