/**
 * The price-feed-zeromq grader's world. There is no broker to ask: everything the grader knows
 * it sees on ZeroMQ sockets of its own, on `ipc://` endpoints in the check's shared folder. When
 * the learner's publisher is graded, the grader's subscribers connect to it (one may stop reading:
 * a stalled subscriber). When the learner's subscriber is graded, the grader's XPUB publisher is
 * what it connects to, and that socket reports every subscribe and unsubscribe it sends.
 */
import { join } from "node:path";
import { Subscriber, XPublisher } from "zeromq";
import { describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Host } from "../../../src/kit/index.ts";
import type { PricePublisher, PriceFeedZeromqSubmission, PriceSubscription, Tick } from "../../../src/contracts/price-feed-zeromq.ts";
import { Recorder, Ticker, describeIds, sleep, tickId } from "../price-feed/grader-util.ts";

export { Recorder, Ticker, describeIds, sleep, tickId };
export type T = CheckContext<PriceFeedZeromqSubmission>;

/** How long a learner call may take before the check says so (generous: a loaded box). */
export const CALL_MS = 5000;
export const ARRIVE_MS = 3000;

export const topicOf = (symbol: string) => `price.${symbol}|`;

/** Symbols with shared prefixes: a ZeroMQ subscription is a byte prefix, so these are the trap. */
export const SYMBOLS = ["A", "AA", "AAPL", "AAL", "M", "MS", "MSFT", "T", "TS", "TSLA", "IBM", "Z9"];
/** Three symbols, each a prefix of the next. */
export const CHAINS = [
  ["A", "AA", "AAPL"],
  ["M", "MS", "MSFT"],
  ["T", "TS", "TSLA"],
];

/** An ipc:// endpoint in the check's shared folder (a Unix socket every host of the check can open). */
export function endpoint(t: T, name: string): string {
  return `ipc://${join(t.sharedDir, name)}`;
}

export function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** One message as a grader socket received it. */
export interface Got {
  frames: Buffer[];
  /** The tick's id when the message is a well-formed tick (two frames, JSON body), else null. */
  id: string | null;
  topic: string;
  body: string;
}

function decode(frames: Buffer[]): Got {
  const topic = frames[0]?.toString("utf8") ?? "";
  const body = frames[1]?.toString("utf8") ?? "";
  let id: string | null = null;
  if (frames.length === 2) {
    try {
      const v = JSON.parse(body) as { symbol?: unknown; seq?: unknown } | null;
      if (v && typeof v === "object") id = tickId(v);
    } catch {
      id = null;
    }
  }
  return { frames, id, topic, body };
}

/**
 * A grader subscriber on the learner's publisher. It reads only while `start()`ed: a tap that was
 * never started, or was paused, is a stalled subscriber (its messages wait in ZeroMQ's queues).
 */
export class Tap {
  readonly got: Got[] = [];
  private reading = false;
  private loop: Promise<void> | null = null;
  private handshakes = 0;
  /** How many times the publisher's end went away (it closed its socket, or its process died). */
  disconnects = 0;
  private readonly listeners = new Set<() => void>();

  private constructor(readonly socket: Subscriber) {
    void (async () => {
      try {
        for await (const e of socket.events) {
          if (e.type === "handshake") this.handshakes++;
          if (e.type === "disconnect") this.disconnects++;
        }
      } catch {
        // closed
      }
    })();
  }

  static async connect(t: T, ep: string, opts: { receiveHighWaterMark?: number; subscribe?: string[] } = {}): Promise<Tap> {
    const socket = new Subscriber({ receiveHighWaterMark: opts.receiveHighWaterMark ?? 100000, receiveTimeout: 100, linger: 0 });
    const tap = new Tap(socket);
    t.defer(() => tap.close());
    socket.connect(ep);
    for (const s of opts.subscribe ?? []) socket.subscribe(s);
    return tap;
  }

  /** Resolves once the ZMTP handshake with the publisher is done: it has this subscriber's pipe. */
  async connected(t: T, what: string): Promise<void> {
    await t.waitFor(() => this.handshakes > 0, { timeoutMs: ARRIVE_MS, intervalMs: 5, message: `${what}: the grader's subscriber could not connect within ${ARRIVE_MS / 1000} s. Bind the publisher to the endpoint you are given.` });
  }

  get isReading(): boolean {
    return this.reading;
  }

  /** Reads continuously until paused or closed. */
  start(): void {
    if (this.reading) return;
    this.reading = true;
    this.loop = (async () => {
      while (this.reading) {
        if (!(await this.readOne())) await sleep(0);
      }
    })();
  }

  /** Stops reading (after at most the receive in progress, which times out within 100 ms). */
  async pause(): Promise<void> {
    this.reading = false;
    await this.loop;
  }

  /** One receive; false when nothing came within the socket's receive timeout. */
  async readOne(): Promise<boolean> {
    try {
      const frames = await this.socket.receive();
      this.got.push(decode(frames));
      for (const fn of this.listeners) fn();
      return true;
    } catch {
      return false;
    }
  }

  /** Reads until nothing has come for `quietMs`. */
  async drain(quietMs = 250): Promise<void> {
    let quietSince = Date.now();
    while (Date.now() - quietSince < quietMs) {
      if (await this.readOne()) quietSince = Date.now();
    }
  }

  ids(): string[] {
    return this.got.map((g) => g.id ?? "?");
  }

  has(id: string): boolean {
    return this.got.some((g) => g.id === id);
  }

  async close(): Promise<void> {
    this.reading = false;
    if (!this.socket.closed) this.socket.close();
    await this.loop?.catch(() => {});
  }
}

/**
 * The grader's publisher for a learner's subscriber: an XPUB socket that reports every
 * subscription message (duplicates and unsubscriptions included), so the grader sees exactly
 * what the learner's SUB socket asked for, and when it went away.
 */
export class GraderPub {
  /** Every subscription message, in order: `on` true for subscribe, false for unsubscribe. */
  readonly subs: { on: boolean; prefix: string }[] = [];

  private constructor(readonly socket: XPublisher) {
    void (async () => {
      try {
        for await (const [m] of socket) {
          if (!m || m.length === 0) continue;
          this.subs.push({ on: m[0] === 1, prefix: m.subarray(1).toString("utf8") });
        }
      } catch {
        // closed
      }
    })();
  }

  /** `noDrop`: a send to a full queue fails (EAGAIN) instead of dropping, so the grader knows when the subscriber's side is full. */
  static async bind(t: T, ep: string, sendHighWaterMark: number, opts: { noDrop?: boolean } = {}): Promise<GraderPub> {
    const socket = new XPublisher({ sendHighWaterMark, linger: 0, noDrop: opts.noDrop ?? false });
    socket.verbosity = "allSubsUnsubs";
    await socket.bind(ep);
    const p = new GraderPub(socket);
    t.defer(() => p.socket.close());
    return p;
  }

  /** Prefixes subscribed and not withdrawn since. */
  live(): string[] {
    const count = new Map<string, number>();
    for (const s of this.subs) count.set(s.prefix, (count.get(s.prefix) ?? 0) + (s.on ? 1 : -1));
    return [...count].filter(([, n]) => n > 0).map(([p]) => p);
  }

  async send(frames: (string | Buffer)[]): Promise<void> {
    await this.socket.send(frames);
  }

  async sendTicks(ticks: Tick[]): Promise<void> {
    for (const tick of ticks) await this.socket.send([topicOf(tick.symbol), JSON.stringify(tick)]);
  }
}

// ---------------------------------------------------------------- the learner's side

export async function learnerCall<R>(t: T, what: string, p: Promise<R>, ms = CALL_MS): Promise<R> {
  try {
    return await t.within(what, ms, p);
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`${what} threw: ${describeValue((e as Error)?.message ?? e)}`);
  }
}

/** The learner's publisher, bound to `ep`, in `host`. */
export async function startPublisher(t: T, host: Host, ep: string, sendHighWaterMark: number): Promise<PricePublisher> {
  const pub = await learnerCall(t, `startPublisher(${describeValue(ep)}, { sendHighWaterMark: ${sendHighWaterMark} })`, host.call<PricePublisher>("startPublisher", ep, { sendHighWaterMark }));
  if (!pub || typeof pub.publish !== "function" || typeof pub.waitForSubscriber !== "function") {
    t.fail(`startPublisher() resolved to ${describeValue(pub)}; it must resolve to an object with publish(), waitForSubscriber() and close().`);
  }
  return pub;
}

/** The learner's subscriber on `ep`, in `host`, calling `rec.fn`. */
export async function startSubscriber(t: T, host: Host, ep: string, symbols: string[], rec: Recorder, receiveHighWaterMark: number): Promise<PriceSubscription> {
  const sub = await learnerCall(t, `subscribe(${describeValue(ep)}, ${describeValue(symbols)}, onTick, { receiveHighWaterMark: ${receiveHighWaterMark} })`, host.call<PriceSubscription>("subscribe", ep, symbols, rec.fn, { receiveHighWaterMark }));
  if (!sub || typeof sub.close !== "function") t.fail(`subscribe() resolved to ${describeValue(sub)}; it must resolve to an object with close().`);
  return sub;
}

/** Publishes every tick through the learner's publisher, as a feed does: each call without waiting for the one before. */
export function publishAll(pub: PricePublisher, ticks: Tick[]): Promise<unknown> {
  return Promise.all(ticks.map((tick) => pub.publish(tick)));
}

/**
 * Makes sure the grader's subscribers are live before the part of a check that counts: the
 * learner's publisher sends a tick of symbol WARM every 20 ms until each tap has one. This does not
 * lean on the learner's waitForSubscriber (a check of its own), and ZeroMQ's slow joiner (a tick
 * sent before the subscription arrived is lost) cannot touch what follows.
 */
export async function warmUp(t: T, pub: PricePublisher, taps: Tap[], ticker: Ticker): Promise<void> {
  const until = Date.now() + ARRIVE_MS;
  const warm = isWarm;
  for (;;) {
    await learnerCall(t, "publish()", Promise.resolve(pub.publish(ticker.tick("WARM"))));
    for (const tap of taps) if (!tap.isReading && !tap.got.some(warm)) await tap.readOne();
    if (taps.some((tap) => tap.isReading)) await sleep(5);
    if (taps.every((tap) => tap.got.some(warm))) return;
    if (Date.now() > until) {
      t.fail(`The grader had your publisher publish a tick every 20 ms for ${ARRIVE_MS / 1000} s, and its subscriber (connected, subscribed to "price.") received none of them. Bind to the endpoint you are given and send [topic, body] with the topic "price.<SYMBOL>|".`);
    }
    await sleep(20);
  }
}

/** A warm-up tick, however the publisher framed it. */
export function isWarm(g: Got): boolean {
  return g.frames.some((f) => f.includes('"symbol":"WARM"'));
}

/** What the tap got that is not a warm-up tick. */
export function feed(tap: Tap): Got[] {
  return tap.got.filter((g) => !isWarm(g));
}

/** Waits until `cond` holds, failing with `message()` after `ms`; an error escaping the learner's code fails at once. */
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

/** A few turns here and in the host: what the learner's code does "right after" has happened by then. */
export async function settle(host: Host): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  if (host.alive) await host.turns().catch(() => {});
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/** A promise whose settling the grader can look at without awaiting it. */
export function track<V>(p: Promise<V>): { p: Promise<V>; state: () => "pending" | "resolved" | "rejected"; error: () => unknown } {
  let state: "pending" | "resolved" | "rejected" = "pending";
  let error: unknown;
  p.then(
    () => (state = "resolved"),
    (e: unknown) => {
      state = "rejected";
      error = e;
    },
  );
  return { p, state: () => state, error: () => error };
}

/**
 * Checks that onTick got exactly `want` (in order), each once, parsed intact. Returns the problem, or null.
 */
export function judgeCalls(rec: Recorder, want: Tick[]): string | null {
  const wantIds = want.map(tickId);
  const byId = new Map(want.map((tk) => [tickId(tk), tk]));
  const stray = rec.calls.find((c) => !byId.has(c.id));
  if (stray) return `onTick was called with ${describeValue(stray.tick, 120)}, which is not one of the ticks it asked for.`;
  for (const c of rec.calls) {
    if (JSON.stringify(c.tick) !== JSON.stringify(byId.get(c.id))) return `onTick got ${describeValue(c.tick, 120)} for tick ${describeValue(c.id)}, expected ${describeValue(byId.get(c.id), 120)}: pass JSON.parse of the body.`;
  }
  const got = rec.ids();
  const dup = got.find((id, i) => got.indexOf(id) !== i);
  if (dup) return `onTick got tick ${describeValue(dup)} twice.`;
  const missing = wantIds.filter((id) => !got.includes(id));
  if (missing.length) return `onTick never got ${describeIds(missing)} (it got ${got.length} of the ${wantIds.length} ticks it asked for).`;
  if (got.join("\n") !== wantIds.join("\n")) return `onTick got the ticks out of order: ${describeIds(got)}; they were published as ${describeIds(wantIds)}.`;
  return null;
}

/** Ticks for symbols picked from `symbols`, each at least once when n allows. */
export function ticksFor(t: T, ticker: Ticker, symbols: readonly string[], n: number, depth?: number): Tick[] {
  const order = [...t.rng.shuffle(symbols), ...Array.from({ length: Math.max(0, n - symbols.length) }, () => t.rng.pick(symbols))];
  return order.slice(0, n).map((s) => (depth ? ticker.tick(s, { book: true, depth }) : ticker.tick(s, { book: t.rng.int(0, 4) === 0 })));
}
