/**
 * The price-feed grader's world: the grader's own connection to RabbitMQ (it declares the
 * exchange where a check grades one function alone, publishes ticks on a confirm channel, and
 * probes queues), and the learner's subscribers, each in a process of its own with a channel
 * through a proxy of its own, so the grader reads off the wire what each one declared, bound,
 * consumed and acked, and every tick the broker handed it.
 */
import type { Channel, ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { amqpCode, brokerText, decodeMethod, describeValue, WireDeliveries, WireTopology } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Delivery, Host, QueueDeclareSeen, Rng } from "../../../src/kit/index.ts";
import type { PriceFeedSubmission, PriceSubscription, Tick } from "../../../src/contracts/price-feed.ts";

export type T = CheckContext<PriceFeedSubmission>;

/** How long a learner call may take before the check says so (generous: a loaded box). */
export const CALL_MS = 5000;
/** How long the grader waits for ticks it expects (they need a few ms each way). */
export const ARRIVE_MS = 4000;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- the grader's side

export interface GraderSide {
  conn: ChannelModel;
  /** A confirm channel: the grader's publishes are on the broker (routed or dropped) once confirmed. */
  pub: ConfirmChannel;
  exchange: string;
}

/** A name unique to this check; in the grading's own vhost nothing needs cleaning up per check. */
export function resourceName(t: T, kind: "queue" | "exchange", base: string): string {
  const vhost = decodeURIComponent(new URL(t.amqpUrl).pathname.slice(1));
  if (vhost.startsWith("msglab-")) return `${t.names.prefix}.${base}`;
  return kind === "queue" ? t.names.queue(base) : t.names.exchange(base);
}

export const REFERENCE_EXCHANGE = { durable: true, autoDelete: false, internal: false } as const;

/** The grader's connection and confirm channel; the exchange declared with the contract's settings unless `declare` is false. */
export async function graderSide(t: T, opts: { declare?: boolean } = {}): Promise<GraderSide> {
  const conn = await t.rabbit.connect();
  const pub = await conn.createConfirmChannel();
  pub.on("error", () => {});
  const exchange = resourceName(t, "exchange", "prices");
  if (opts.declare !== false) await pub.assertExchange(exchange, "topic", REFERENCE_EXCHANGE);
  return { conn, pub, exchange };
}

/** A channel for one operation that may close it (a passive declare that fails). */
export async function throwaway(g: GraderSide): Promise<Channel> {
  const ch = await g.conn.createChannel();
  ch.on("error", () => {});
  return ch;
}

/** What a passive declare from the grader's own connection says about a queue. */
export async function probeQueue(g: GraderSide, queue: string): Promise<"exclusive" | "missing" | { messageCount: number; consumerCount: number }> {
  const ch = await throwaway(g);
  try {
    const r = await ch.checkQueue(queue);
    await ch.close().catch(() => {});
    return { messageCount: r.messageCount, consumerCount: r.consumerCount };
  } catch (e) {
    if (amqpCode(e) === 405) return "exclusive";
    if (amqpCode(e) === 404) return "missing";
    throw e;
  }
}

/** Reads every ready message of a grader-owned queue with basic.get (auto-ack), in queue order. */
export async function drain(g: GraderSide, queue: string): Promise<GetMessage[]> {
  const ch = await throwaway(g);
  const out: GetMessage[] = [];
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (m === false) break;
    out.push(m);
  }
  await ch.close().catch(() => {});
  return out;
}

// ---------------------------------------------------------------- ticks

/** Symbols with shared prefixes (A, AA, AAPL, AAL): a topic word matches exactly, or not at all. */
export const SYMBOLS = ["A", "AA", "AAPL", "AAL", "MSFT", "MS", "BRK2", "Z9", "IBM", "T", "TSLA", "GOOG"];

/** What the grader publishes: a tick, something else on the exchange (noise), or a body that is not JSON. */
export interface Item {
  /** The message id the grader sets, so each delivery on the learner's wire is known. */
  id: string;
  key: string;
  body: Buffer;
  tick: Tick | null;
}

export const tickId = (tick: { symbol?: unknown; seq?: unknown } | null | undefined): string => `${String(tick?.symbol)}#${String(tick?.seq)}`;

/** A run of ticks for the given symbols (seed-chosen order), seq increasing, prices on both sides of .5 cents. */
export class Ticker {
  private seq: number;
  private readonly t0 = Date.UTC(2024, 2, 11, 14, 30, 0, 0);
  private noise = 0;
  constructor(private readonly rng: Rng) {
    this.seq = rng.int(1, 5000);
  }

  /** A tick; `depth` levels of book make it bigger (a level is about 40 bytes of JSON). */
  tick(symbol: string, opts: { book?: boolean; depth?: number } = {}): Tick {
    this.seq += this.rng.int(1, 3);
    const price = Math.round((this.rng.int(1, 90000) + this.rng.next()) * 100) / 10000 + 1;
    const tick: Tick = { symbol, seq: this.seq, price, time: new Date(this.t0 + this.seq * 17).toISOString() };
    if (opts.book) {
      tick.book = Array.from({ length: opts.depth ?? this.rng.int(1, 3) }, (_, i) => ({ bid: Math.round((price - 0.01 * (i + 1)) * 100) / 100, ask: Math.round((price + 0.01 * (i + 1)) * 100) / 100, size: this.rng.int(1, 900) * 100 }));
    }
    return tick;
  }

  item(symbol: string, opts: { book?: boolean } = {}): Item {
    const tick = this.tick(symbol, opts);
    return { id: tickId(tick), key: `price.${symbol}`, body: Buffer.from(JSON.stringify(tick), "utf8"), tick };
  }

  /** Ticks for symbols picked from `symbols`, each at least once when n allows. */
  items(symbols: readonly string[], n: number): Item[] {
    const order = [...this.rng.shuffle(symbols), ...Array.from({ length: Math.max(0, n - symbols.length) }, () => this.rng.pick(symbols))];
    return order.slice(0, n).map((s) => this.item(s, { book: this.rng.int(0, 4) === 0 }));
  }

  /** A message on the exchange that is not a tick a subscriber asked for. */
  noiseItem(key: string): Item {
    const n = ++this.noise;
    return { id: `noise#${n}#${key}`, key, body: Buffer.from(JSON.stringify({ kind: "not-a-tick", key, n }), "utf8"), tick: null };
  }

  /** A tick's routing key with a body that is not JSON. */
  badItem(symbol: string, text: string): Item {
    const n = ++this.noise;
    return { id: `bad#${n}`, key: `price.${symbol}`, body: Buffer.from(text, "utf8"), tick: null };
  }
}

/**
 * Publishes on the grader's confirm channel (transient, with message ids) and waits for every
 * confirm. Resolves with the ids the broker nacked: a queue with x-overflow reject-publish that
 * is full refuses a tick routed to it, and says so to the publisher.
 */
export async function publish(g: GraderSide, items: Item[]): Promise<string[]> {
  const confirms = items.map(
    (it) => new Promise<boolean>((resolve) => g.pub.publish(g.exchange, it.key, it.body, { messageId: it.id, contentType: "application/json" }, (err) => resolve(!err))),
  );
  const ok = await Promise.all(confirms);
  return items.filter((_, i) => !ok[i]).map((it) => it.id);
}

export function describeIds(ids: readonly string[], max = 12): string {
  if (ids.length <= max) return ids.map((i) => describeValue(i)).join(", ");
  return `${ids.slice(0, max).map((i) => describeValue(i)).join(", ")} … (${ids.length} in all)`;
}

// ---------------------------------------------------------------- the handler

export interface Call {
  n: number;
  tick: unknown;
  id: string;
  state: "running" | "done" | "failed";
  /** Another call was still running when this one started. */
  overlapped: boolean;
  at: number;
}

/**
 * The learner's onTick: a callback into the grader. Records every call; can hold calls
 * (a stalled subscriber: the returned promise settles only on `release()`), reject chosen ticks,
 * and take a moment per tick.
 */
export class Recorder {
  readonly calls: Call[] = [];
  private running = 0;
  private stalled: (() => void)[] = [];
  /** Calls from this one on wait for `release()`; null: none do. */
  stallFrom: number | null = null;
  failIds = new Set<string>();
  delayMs: () => number = () => 0;
  readonly fn: (tick: Tick) => Promise<void>;

  constructor() {
    this.fn = async (tick: Tick) => {
      const call: Call = { n: this.calls.length + 1, tick, id: tickId(tick as { symbol?: unknown; seq?: unknown }), state: "running", overlapped: this.running > 0, at: Date.now() };
      this.calls.push(call);
      this.running++;
      try {
        if (this.stallFrom !== null && call.n >= this.stallFrom) await new Promise<void>((r) => this.stalled.push(r));
        const d = this.delayMs();
        if (d > 0) await sleep(d);
        if (this.failIds.has(call.id)) throw new Error(`grader: onTick rejects ${call.id}`);
        call.state = "done";
      } catch (e) {
        call.state = "failed";
        throw e;
      } finally {
        this.running--;
      }
    };
  }

  /** Lets every held call finish and holds no more. */
  release(): void {
    this.stallFrom = null;
    for (const r of this.stalled.splice(0)) r();
  }

  ids(): string[] {
    return this.calls.map((c) => c.id);
  }
}

// ---------------------------------------------------------------- the learner's subscribers

export interface Sub {
  /** For messages: "subscriber 2". */
  label: string;
  host: Host;
  proxy: ChaosProxy;
  wire: WireDeliveries;
  topo: WireTopology;
  ch: Channel;
  rec: Recorder;
  symbols: string[];
  maxBacklog: number;
  subscription: PriceSubscription | null;
}

/** A host (the check's first, or a new process) with a channel through a fresh proxy. */
export async function learnerChannel(t: T, host: Host | "first" | "new"): Promise<{ host: Host; proxy: ChaosProxy; wire: WireDeliveries; topo: WireTopology; ch: Channel }> {
  const [proxy, h] = await Promise.all([t.proxy(), host === "first" ? t.learnerHost() : host === "new" ? t.host() : Promise.resolve(host)]);
  const wire = new WireDeliveries(proxy);
  const topo = new WireTopology(proxy);
  const ch = await h.cap<Channel>("amqp.channel", { url: proxy.urlFor(t.amqpUrl) });
  return { host: h, proxy, wire, topo, ch };
}

/** Sets up a subscriber's process and channel; `subscribeOn` then calls the learner's subscribe(). */
export async function prepareSub(t: T, label: string, host: Host | "first" | "new", symbols: string[], maxBacklog: number): Promise<Sub> {
  const l = await learnerChannel(t, host);
  return { label, ...l, rec: new Recorder(), symbols, maxBacklog, subscription: null };
}

export function callSubscribe(g: GraderSide, s: Sub): Promise<PriceSubscription> {
  return s.host.call<PriceSubscription>("subscribe", s.ch, g.exchange, s.symbols, s.rec.fn, { maxBacklog: s.maxBacklog });
}

/** Calls the learner's subscribe() in the subscriber's process and checks what it resolved to. */
export async function subscribeOn(t: T, g: GraderSide, s: Sub, call: Promise<PriceSubscription> = callSubscribe(g, s)): Promise<Sub> {
  let sub: PriceSubscription;
  try {
    sub = await t.within(`subscribe() for ${s.label}`, CALL_MS, call);
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`subscribe(ch, exchange, ${describeValue(s.symbols)}, onTick, { maxBacklog: ${s.maxBacklog} }) threw: ${brokerText(e)}`);
  }
  if (!sub || typeof sub.stop !== "function") t.fail(`subscribe() resolved to ${describeValue(sub)}; it must resolve to an object with a stop() method and the queue's name.`);
  s.subscription = sub;
  return s;
}

export async function newSub(t: T, g: GraderSide, label: string, host: Host | "first" | "new", symbols: string[], maxBacklog: number): Promise<Sub> {
  return subscribeOn(t, g, await prepareSub(t, label, host, symbols, maxBacklog));
}

/** The queue the subscriber consumes, from its basic.consume on the wire (an empty name: its channel's last declared queue). */
export function consumedQueue(s: Sub): string | null {
  const c = s.wire.consumes[s.wire.consumes.length - 1];
  if (!c) return null;
  if (c.method.queue !== "") return c.method.queue;
  const ds = s.topo.queueDeclares.filter((d) => d.link === c.link && d.channel === c.channel && d.ok);
  return ds[ds.length - 1]?.queue ?? null;
}

/** The subscriber's queue and the declare that made it, or a failure naming what the wire showed. */
export function queueOf(t: T, s: Sub): { queue: string; declare: QueueDeclareSeen } {
  const queue = consumedQueue(s);
  if (queue === null) t.fail(`${cap(s.label)}: subscribe() resolved, but no basic.consume crossed its connection. Consume on the channel you are given.`);
  const declare = s.topo.declareOf(queue);
  if (!declare) t.fail(`${cap(s.label)} consumes queue ${describeValue(queue)}, but its connection never declared that queue (the grader saw declares of ${describeValue(s.topo.queueDeclares.map((d) => d.queue))}). Declare the subscriber's own queue in subscribe().`);
  return { queue, declare };
}

export function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The message id and routing key of a delivery (the routing key from its basic.deliver). */
export function deliveryKey(d: Delivery): string {
  const m = decodeMethod(d.frame);
  return m && (m.name === "basic.deliver" || m.name === "basic.get-ok") ? m.routingKey : "?";
}

/** Ids of the deliveries on a subscriber's wire, in order. */
export function deliveredIds(s: Sub): string[] {
  return s.wire.deliveries.map((d) => d.messageId ?? "?");
}

/** Waits until `cond` holds, failing with `message()` after `ms`. Watches the subscriber's hosts too. */
export async function waitUntil(t: T, cond: () => boolean | Promise<boolean>, ms: number, message: () => string, hosts: Host[] = []): Promise<void> {
  await t.waitFor(
    async () => {
      for (const h of hosts) {
        if (h.escaped.length) t.fail(`An error escaped your code: ${describeValue((h.escaped[0] as Error)?.message ?? h.escaped[0])}. Catch it where it is thrown.`);
      }
      return cond();
    },
    { timeoutMs: ms, message, intervalMs: 5 },
  );
}

/** A few turns here and in each host: what the learner's code does "right after" has happened by then. */
export async function settle(hosts: Host[]): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  await Promise.all(hosts.filter((h) => h.alive).map((h) => h.turns().catch(() => {})));
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * Checks that a subscriber handed onTick exactly `want` (in order), each once, parsed intact,
 * and that nothing else crossed its wire but `allowedExtra` ids. Returns the problem, or null.
 */
export function judgeReceived(s: Sub, want: Item[], allowedExtra: ReadonlySet<string> = new Set()): string | null {
  const wantIds = want.map((i) => i.id);
  const wantSet = new Set(wantIds);
  const strayWire = s.wire.deliveries.filter((d) => !wantSet.has(d.messageId ?? "") && !allowedExtra.has(d.messageId ?? ""));
  if (strayWire.length) {
    const keys = [...new Set(strayWire.map(deliveryKey))];
    return `the broker delivered ${strayWire.length} message(s) to it that it did not ask for, with routing key(s) ${describeValue(keys)}: its queue is bound too widely (a binding must be price.<symbol>, or price.* for every symbol).`;
  }
  const got = s.rec.ids();
  const byId = new Map(want.map((i) => [i.id, i]));
  const stray = s.rec.calls.find((c) => !wantSet.has(c.id));
  if (stray) return `onTick was called with ${describeValue(stray.tick)}, which is not one of the ticks it asked for.`;
  for (const c of s.rec.calls) {
    const it = byId.get(c.id)!;
    if (JSON.stringify(c.tick) !== JSON.stringify(it.tick)) return `onTick got ${describeValue(c.tick, 120)} for tick ${describeValue(c.id)}, expected ${describeValue(it.tick, 120)}: pass JSON.parse of the body.`;
  }
  const dup = got.find((id, i) => got.indexOf(id) !== i);
  if (dup) return `onTick got tick ${describeValue(dup)} twice.`;
  const missing = wantIds.filter((id) => !got.includes(id));
  if (missing.length) return `onTick never got ${describeIds(missing)} (it got ${got.length} of the ${wantIds.length} ticks it asked for).`;
  if (got.join("\n") !== wantIds.join("\n")) return `onTick got the ticks out of order: ${describeIds(got)}; they were published as ${describeIds(wantIds)}.`;
  return null;
}
