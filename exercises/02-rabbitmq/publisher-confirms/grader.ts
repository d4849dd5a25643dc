import { isDeepStrictEqual } from "node:util";
import amqp from "amqplib";
import type { Channel, ChannelModel, GetMessage } from "amqplib";
import { amqpCode, brokerText, defineGrader, describeValue, isConfirm, LabError } from "../../../src/kit/index.ts";
import type { AmqpFrame, ChaosProxy, CheckContext, Rng } from "../../../src/kit/index.ts";
import type { DomainEvent, Publisher, PublisherConfirmsSubmission } from "../../../src/contracts/publisher-confirms.ts";

type T = CheckContext<PublisherConfirmsSubmission>;

/**
 * How long a publish must stay pending after its confirm has been held at the proxy. By then a
 * fire-and-forget publish resolved long ago (before its message even reached the queue); the
 * window only catches code that "waits" on a short timer instead of the confirm.
 */
const OBSERVE_MS = 200;

// ---------------------------------------------------------------- connections

/** The learner's connection: direct, or through the chaos proxy. Closed after the check. */
async function learnerConnection(t: T, proxy?: ChaosProxy): Promise<ChannelModel> {
  if (!proxy) return t.rabbit.connect();
  let conn: ChannelModel;
  try {
    conn = await amqp.connect(proxy.urlFor(t.rabbit.url));
  } catch (e) {
    throw new LabError(`Could not connect to RabbitMQ through the grader's proxy (${(e as Error).message}): run \`msglab doctor\`.`);
  }
  // The proxy cuts this connection in some checks; its error must not crash the grader.
  conn.on("error", () => {});
  t.defer(() => conn.close().catch(() => {}));
  return conn;
}

async function newPublisher(t: T, conn: ChannelModel, exchange: string): Promise<Publisher> {
  const pub = await t.within("createPublisher()", 5000, t.submission.createPublisher(conn, exchange));
  if (!pub || typeof pub.publish !== "function" || typeof pub.close !== "function") {
    t.fail(`createPublisher() resolved to ${describeValue(pub)}; it must resolve to an object with publish() and close() methods.`);
  }
  t.defer(() => Promise.resolve().then(() => pub.close()).catch(() => {}));
  return pub;
}

// ---------------------------------------------------------------- the grader's own view


/** The grader's own connection: declares its queues, binds them, counts and reads messages. */
class Observer {
  private ch: Channel | undefined;
  private constructor(private readonly conn: ChannelModel) {}

  static async open(t: T): Promise<Observer> {
    return new Observer(await t.rabbit.connect());
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
          t.fail(`After createPublisher(conn, "${exchange}") resolved, the grader could not bind a queue to that exchange: the broker says ${brokerText(e)}. createPublisher() must declare the exchange before it resolves.`);
        }
        throw e;
      }
    }
    await ch.close().catch(() => {});
  }

  /** Ready messages in the queue. */
  async count(queue: string): Promise<number> {
    const ch = await this.channel();
    return (await ch.checkQueue(queue)).messageCount;
  }

  async purge(queue: string): Promise<void> {
    await (await this.channel()).purgeQueue(queue);
  }

  /** Publishes straight to a queue on a confirm channel and waits for the broker's ack. */
  async fill(queue: string, body: string): Promise<void> {
    const ch = await this.conn.createConfirmChannel();
    ch.on("error", () => {});
    ch.sendToQueue(queue, Buffer.from(body), { persistent: true });
    await ch.waitForConfirms();
    await ch.close().catch(() => {});
  }

  /**
   * Waits (briefly) until `n` messages are ready, then takes them all. The wait matters only for
   * code that resolves before the broker has the message; the confirm checks judge that.
   */
  async collect(t: T, queue: string, n: number): Promise<GetMessage[]> {
    await t.waitFor(async () => (await this.count(queue)) >= n, { timeoutMs: 2000, message: "" }).catch((e: unknown) => {
      if ((e as Error)?.name !== "CheckFailure") throw e;
    });
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
}

// ---------------------------------------------------------------- events and calls

const ENTITIES = ["order", "payment", "shipment", "invoice"] as const;
const ACTIONS = ["created", "updated", "cancelled", "settled"] as const;
const REGIONS = ["eu", "us", "apac"] as const;
const SKUS = ["bolt-m4", "gear-12", "belt-800", "valve-3/4", "fuse-10a"];
const NOTES = ["", "gift wrap", "leave at the door ✓", "Zürich depot", "rush \"today\""];

interface Key {
  entity: string;
  action: string;
  region: string;
}
const keyText = (k: Key) => `${k.entity}.${k.action}.${k.region}`;

function randomKey(rng: Rng): Key {
  return { entity: rng.pick(ENTITIES), action: rng.pick(ACTIONS), region: rng.pick(REGIONS) };
}

function tag(rng: Rng): string {
  return Math.floor(rng.next() * 0xffffffff).toString(16).padStart(8, "0");
}

/** A distinct event: its `eventRef` names it in messages, and no two are equal. */
function makeEvent(rng: Rng, n: number, type = "OrderPlaced"): DomainEvent {
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

const refOf = (e: DomainEvent) => String(e.eventRef);

/** One publish() call, watched from outside: its state is what the learner's promise did. */
interface Call {
  event: DomainEvent;
  key: string;
  state: "pending" | "resolved" | "rejected";
  value?: unknown;
  error?: unknown;
  settled: Promise<void>;
}

function startPublish(pub: Publisher, key: string, event: DomainEvent): Call {
  const call: Call = { event, key, state: "pending", settled: Promise.resolve() };
  // The executor runs publish() right now (same tick) and turns a synchronous throw into a rejection.
  call.settled = new Promise((resolve) => resolve(pub.publish(key, event))).then(
    (v) => {
      call.state = "resolved";
      call.value = v;
    },
    (e: unknown) => {
      call.state = "rejected";
      call.error = e;
    },
  );
  return call;
}

async function settleAll(t: T, calls: Call[], ms: number, what: string): Promise<void> {
  await t.within(what, ms, Promise.all(calls.map((c) => c.settled)));
}

function errText(e: unknown): string {
  return describeValue(e instanceof Error ? e.message : e);
}

/** The messageId a resolved publish() reported; fails unless it is `{ messageId: non-empty string }`. */
function receiptId(t: T, call: Call): string {
  const v = call.value as { messageId?: unknown } | null | undefined;
  if (!v || typeof v !== "object" || typeof v.messageId !== "string" || v.messageId === "") {
    t.fail(`publish("${call.key}", …) resolved to ${describeValue(call.value)}; it must resolve to { messageId } with the id of the message it published.`);
  }
  return v.messageId;
}

/** Resolves or fails: a rejected call here means the learner's publish failed with nothing wrong. */
function mustHaveResolved(t: T, call: Call, context: string): string {
  if (call.state === "rejected") t.fail(`publish("${call.key}", …) rejected with ${errText(call.error)}${context}`);
  if (call.state !== "resolved") t.fail(`publish("${call.key}", …) had not settled${context}`);
  return receiptId(t, call);
}

function parseBody(t: T, m: GetMessage): DomainEvent {
  const text = m.content.toString("utf8");
  try {
    return JSON.parse(text) as DomainEvent;
  } catch {
    t.fail(`A message on the exchange has a body that is not JSON: ${describeValue(text)}. The body must be JSON.stringify(event).`);
  }
}

/** Messages read back, each matched to the event it carries (by eventRef, then compared whole). */
function matchMessages(t: T, msgs: GetMessage[], events: DomainEvent[], where: string): Map<string, GetMessage> {
  const byRef = new Map(events.map((e) => [refOf(e), e]));
  const out = new Map<string, GetMessage>();
  for (const m of msgs) {
    const body = parseBody(t, m);
    const sent = byRef.get(String(body?.eventRef));
    if (!sent) t.fail(`${where} holds a message the grader never published: ${describeValue(body)}.`);
    if (!isDeepStrictEqual(body, sent)) {
      t.fail(`${where}: the message for event ${refOf(sent)} carries ${describeValue(body)}, but the event published was ${describeValue(sent)}. The body must be exactly JSON.stringify(event).`);
    }
    if (out.has(refOf(sent))) t.fail(`${where} holds event ${refOf(sent)} twice, but publish() was called once for it.`);
    out.set(refOf(sent), m);
  }
  return out;
}

/**
 * t.waitFor with a message built when the wait gives up (so it reports what was observed then),
 * and an early exit: `stop` returning a string fails at once with that message.
 */
async function waitUntil(
  t: T,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  message: () => string,
  stop?: () => string | null,
): Promise<void> {
  let early: string | null = null;
  try {
    await t.waitFor(
      async () => {
        early = stop?.() ?? null;
        return early !== null || (await condition());
      },
      { timeoutMs, message: "", intervalMs: 10 },
    );
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") t.fail(message());
    throw e;
  }
  if (early !== null) t.fail(early);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The first call that settled while it should still have been waiting for its confirm, as a failure message. */
function settledTooEarly(calls: Call[], proxy: ChaosProxy, when: string): string | null {
  const c = calls.find((x) => x.state !== "pending");
  if (!c) return null;
  const noConfirm = proxy.heldCount === 0;
  if (c.state === "resolved") {
    return `publish("${c.key}", …) resolved ${when}, while the broker's confirm for its message was held back by the grader${
      noConfirm ? " (in fact the broker had sent no confirm at all for it: the channel is not in confirm mode)" : ""
    }. A publish that resolves before its confirm tells the caller "safe" about a message the broker has not taken responsibility for: if the broker dies now, the message is lost and nobody knows.`;
  }
  return `publish("${c.key}", …) rejected with ${errText(c.error)} ${when}, although nothing had gone wrong: its confirm was only delayed.`;
}

/**
 * The broker's confirms on the learner's connection, decoded from the wire: how many messages it
 * acked and how many it nacked. Lets a failure say what the broker really answered.
 */
class ConfirmLedger {
  acked = 0;
  nacked = 0;
  /** Per channel, the delivery tags already confirmed (tags count from 1 after confirm.select). */
  private readonly confirmed = new Map<number, Set<number>>();

  constructor(proxy: ChaosProxy) {
    proxy.tap("toBroker", (f) => {
      if (f.type === 1 && f.classId === 85 && f.methodId === 10) this.confirmed.set(f.channel, new Set());
    });
    proxy.tap("toClient", (f) => {
      if (isConfirm(f)) this.record(f);
    });
  }

  get total(): number {
    return this.acked + this.nacked;
  }

  private record(f: AmqpFrame): void {
    // basic.ack / basic.nack arguments: delivery-tag (64 bits), then a bit field (multiple = bit 0).
    const tag = Number(f.raw.readBigUInt64BE(11));
    const multiple = (f.raw[19]! & 1) === 1;
    let done = this.confirmed.get(f.channel);
    if (!done) this.confirmed.set(f.channel, (done = new Set()));
    const tags = multiple ? Array.from({ length: tag }, (_, i) => i + 1) : [tag];
    for (const x of tags) {
      if (done.has(x)) continue;
      done.add(x);
      if (f.methodId === 120) this.nacked++;
      else this.acked++;
    }
  }
}

/** Frames on the learner's connection, as the proxy saw them. */
function frames(proxy: ChaosProxy, direction: "toBroker" | "toClient", classId: number, methodId: number): number {
  return proxy.seen.filter((s) => s.direction === direction && s.frame.type === 1 && s.frame.classId === classId && s.frame.methodId === methodId).length;
}

// ---------------------------------------------------------------- checks

export default defineGrader<PublisherConfirmsSubmission>({
  exports: { createPublisher: "function" },
  checks: [
    {
      name: "createPublisher declares a durable topic exchange",
      hint: "assertExchange(name, type, options): which type lets consumers bind with patterns like order.*.eu, and which option makes the exchange survive a broker restart?",
      timeoutMs: 10000,
      async run(t: T) {
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t);
        const exchange = t.names.exchange("events");
        await newPublisher(t, conn, exchange);

        // Passive first: a plain re-declare of a missing exchange would create it.
        const passive = await obs.throwaway();
        try {
          await passive.checkExchange(exchange);
          await passive.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) === 404) t.fail(`After createPublisher(conn, "${exchange}") resolved, the broker has no exchange of that name. Declare it in createPublisher(), before it resolves.`);
          throw e;
        }

        // The broker accepts a re-declaration only when type, durable, auto_delete and internal
        // all match; its 406 reply names the first one that differs.
        const probe = await obs.throwaway();
        try {
          await probe.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
          await probe.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) !== 406) throw e;
          const said = brokerText(e);
          const m = /inequivalent arg '([^']+)'.*received '([^']*)' but current is '([^']*)'/.exec(said);
          const [arg, , current] = m ? [m[1], m[2], m[3]] : [undefined, undefined, undefined];
          if (arg === "type") {
            t.fail(`The exchange is a ${current} exchange, not a topic exchange (the broker refused the grader's re-declaration: ${said}). Consumers of domain events bind with patterns such as "order.*.eu" or "payment.#"; only a topic exchange routes on them.`);
          }
          if (arg === "durable") {
            t.fail(`The exchange is not durable (the broker says: ${said}). A non-durable exchange disappears when the broker restarts, and publishes to it then fail: persistent messages need a durable exchange and durable queues to survive a restart.`);
          }
          if (arg === "auto_delete") {
            t.fail(`The exchange is auto-delete (the broker says: ${said}). It vanishes as soon as its last queue unbinds, taking the publisher's target with it.`);
          }
          if (arg === "internal") {
            t.fail(`The exchange is internal (the broker says: ${said}): clients cannot publish to an internal exchange.`);
          }
          t.fail(`The broker refused the grader's declaration of a durable topic exchange named "${exchange}": ${said}.`);
        }

        // A second publisher (a restart, another instance) declares it again: that must work and
        // keep the exchange, bindings included.
        const queue = t.names.queue("bound");
        const key = keyText(randomKey(t.rng));
        await obs.queue(t, queue, exchange, ["#"]);
        const conn2 = await learnerConnection(t);
        let again: Publisher;
        try {
          again = await newPublisher(t, conn2, exchange);
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`createPublisher() failed for an exchange that already exists (a second instance, or a restart): ${brokerText(e)}.`);
        }
        const event = makeEvent(t.rng, 1);
        const call = startPublish(again, key, event);
        await settleAll(t, [call], 5000, "publish() on a second publisher");
        mustHaveResolved(t, call, " on a second publisher for the same exchange.");
        const got = await obs.collect(t, queue, 1);
        if (got.length !== 1) {
          t.fail(`The grader bound a queue to the exchange with "#", then called createPublisher() a second time and published one event through the new publisher: the queue received ${got.length} messages, expected 1. Declaring the exchange again must keep it and its bindings (never delete and re-create it), and publish() must publish to that exchange.`);
        }
      },
    },
    {
      name: "each event arrives as persistent JSON with a message id, a timestamp and its routing key",
      hint: "Look at the options of channel.publish(): persistent, messageId, timestamp (whole seconds), contentType. Publish to the exchange you were given with the routing key you were given.",
      timeoutMs: 10000,
      async run(t: T) {
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t);
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);

        // Two pattern bindings that a topic exchange must tell apart: one with "*", one with "#".
        const pivot = randomKey(t.rng);
        const starPattern = `${pivot.entity}.*.${pivot.region}`;
        const hashPattern = `*.${pivot.action}.#`;
        const matchesStar = (k: Key) => k.entity === pivot.entity && k.region === pivot.region;
        const matchesHash = (k: Key) => k.action === pivot.action;
        const n = 8;
        let keys: Key[];
        do {
          keys = Array.from({ length: n }, () => {
            // Skew towards keys near the pivot, so both patterns see matches and near misses.
            const k = randomKey(t.rng);
            const roll = t.rng.next();
            if (roll < 0.3) return { ...k, entity: pivot.entity, region: pivot.region };
            if (roll < 0.55) return { ...k, action: pivot.action };
            return k;
          });
        } while (![matchesStar, matchesHash].every((f) => keys.some(f) && keys.some((k) => !f(k))));

        const all = t.names.queue("all");
        const star = t.names.queue("star");
        const hash = t.names.queue("hash");
        await obs.queue(t, all, exchange, ["#"]);
        await obs.queue(t, star, exchange, [starPattern]);
        await obs.queue(t, hash, exchange, [hashPattern]);

        const events = keys.map((_, i) => makeEvent(t.rng, i, t.rng.pick(["OrderPlaced", "PaymentCaptured", "ParcelShipped"])));
        const calls: Call[] = [];
        const before = Date.now();
        for (let i = 0; i < n; i++) {
          const call = startPublish(pub, keyText(keys[i]!), events[i]!);
          await settleAll(t, [call], 5000, `publish("${call.key}", …)`);
          mustHaveResolved(t, call, ".");
          calls.push(call);
        }
        const after = Date.now();

        const msgs = await obs.collect(t, all, n);
        if (msgs.length === 0) {
          t.fail(`${n} publish() calls resolved, but a queue bound to exchange "${exchange}" with "#" received nothing. Publish to the exchange you were given, and make it a topic exchange (a direct exchange treats "#" as a plain word).`);
        }
        const got = matchMessages(t, msgs, events, `The queue bound with "#"`);
        if (got.size !== n) t.fail(`${n} publish() calls resolved, but a queue bound with "#" received ${got.size} of the events.`);

        const ids = new Map<string, string>();
        const lo = Math.floor(before / 1000) - 1;
        const hi = Math.ceil(after / 1000) + 1;
        for (let i = 0; i < n; i++) {
          const call = calls[i]!;
          const m = got.get(refOf(call.event))!;
          const p = m.properties;
          const what = `The message for publish("${call.key}", …)`;
          if (m.fields.routingKey !== call.key) t.fail(`${what} arrived with routing key ${describeValue(m.fields.routingKey)}, expected "${call.key}".`);
          if (p.deliveryMode !== 2) {
            t.fail(`${what} has delivery mode ${describeValue(p.deliveryMode)}, expected 2 (persistent). A transient message is lost when the broker restarts, even in a durable queue.`);
          }
          if (typeof p.contentType !== "string" || !/^application\/json\s*(;.*)?$/i.test(p.contentType)) {
            t.fail(`${what} has content type ${describeValue(p.contentType)}, expected "application/json": consumers (and the management UI) read it to know how to decode the body.`);
          }
          if (typeof p.messageId !== "string" || p.messageId === "") {
            t.fail(`${what} has message id ${describeValue(p.messageId)}. Every message needs a unique messageId: consumers use it to drop the duplicates that at-least-once delivery creates.`);
          }
          const receipt = receiptId(t, call);
          if (receipt !== p.messageId) t.fail(`publish("${call.key}", …) resolved to messageId "${receipt}", but the message it published carries messageId "${p.messageId}".`);
          const clash = ids.get(p.messageId);
          if (clash) t.fail(`Two messages carry the same messageId "${p.messageId}" (events ${clash} and ${refOf(call.event)}): a consumer that de-duplicates by id would drop one of them.`);
          ids.set(p.messageId, refOf(call.event));
          const ts = p.timestamp as unknown;
          if (typeof ts !== "number") t.fail(`${what} has no timestamp (got ${describeValue(ts)}). Set the timestamp property to the publish time.`);
          if (ts >= lo * 1000 - 1000 && ts <= hi * 1000 + 1000) {
            t.fail(`${what} has timestamp ${ts}: that is milliseconds. AMQP timestamps are whole seconds since the epoch (Math.floor(Date.now() / 1000)); other clients and the management UI read ${ts} as a date thousands of years ahead.`);
          }
          if (ts < lo || ts > hi) {
            t.fail(`${what} has timestamp ${ts} (${new Date(ts * 1000).toISOString()}), but it was published between ${new Date(before).toISOString()} and ${new Date(after).toISOString()}. The timestamp is the publish time in whole seconds since the epoch.`);
          }
        }

        for (const [queue, pattern, matches] of [
          [star, starPattern, matchesStar],
          [hash, hashPattern, matchesHash],
        ] as const) {
          const routed = matchMessages(t, await obs.drain(queue), events, `The queue bound with "${pattern}"`);
          const expected = calls.filter((c, i) => matches(keys[i]!)).map((c) => c.key);
          const actual = calls.filter((c) => routed.has(refOf(c.event))).map((c) => c.key);
          if (!isDeepStrictEqual(actual, expected)) {
            t.fail(`A queue bound to the exchange with "${pattern}" received the events published with keys [${actual.join(", ")}]; a topic exchange routes exactly [${expected.join(", ")}] there. ("*" matches one word, "#" zero or more.)`);
          }
        }
      },
    },
    {
      name: "message ids are unique, also across publishers",
      hint: "A counter restarts at 1 with every new publisher (every restart of the service), and a clock reading repeats within a millisecond. What id is unique everywhere?",
      timeoutMs: 10000,
      async run(t: T) {
        const obs = await Observer.open(t);
        const exchange = t.names.exchange("events");
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("all");
        const events: DomainEvent[] = [];
        const calls: Call[] = [];
        // Two lives of the same service: publish a few, stop; a new instance publishes a few.
        for (let life = 0; life < 2; life++) {
          const conn = await learnerConnection(t);
          const pub = await newPublisher(t, conn, exchange);
          if (life === 0) await obs.queue(t, queue, exchange, [key]);
          const batch = Array.from({ length: 3 }, (_, i) => makeEvent(t.rng, life * 10 + i));
          events.push(...batch);
          // At once, as concurrent requests would.
          const round = batch.map((e) => startPublish(pub, key, e));
          await settleAll(t, round, 5000, "3 concurrent publish() calls");
          for (const c of round) mustHaveResolved(t, c, ".");
          calls.push(...round);
          await t.within("close()", 3000, pub.close());
          await conn.close().catch(() => {});
        }
        const got = matchMessages(t, await obs.collect(t, queue, events.length), events, "The grader's queue");
        if (got.size !== events.length) {
          const firstLife = events.slice(0, 3).filter((e) => got.has(refOf(e))).length;
          t.fail(`${events.length} publish() calls resolved, but the grader's queue (bound to the exchange before the first publisher published) received ${got.size} of their events: ${firstLife} of 3 from the first publisher, ${got.size - firstLife} of 3 from the second, created after the first was closed.${
            firstLife === 3 ? " Closing a publisher must leave the exchange and its bindings alone, and a new publisher must not re-create it." : ""
          }`);
        }
        const seen = new Map<string, string>();
        for (const c of calls) {
          const m = got.get(refOf(c.event))!;
          const id = m.properties.messageId as unknown;
          if (typeof id !== "string" || id === "") t.fail(`The message for event ${refOf(c.event)} has message id ${describeValue(id)}; every message needs a unique messageId.`);
          const clash = seen.get(id);
          if (clash) {
            t.fail(`Two messages carry messageId "${id}": events ${clash} and ${refOf(c.event)} (${calls.indexOf(c) >= 3 && calls.findIndex((x) => refOf(x.event) === clash) < 3 ? "one from the first publisher, one from the second: ids restart with the process" : "published at the same moment"}). A consumer that de-duplicates by messageId would silently drop one of them.`);
          }
          seen.set(id, refOf(c.event));
        }
      },
    },
    {
      name: "publish() resolves only after the broker confirms the message",
      hint: "A channel from createChannel() gets no confirms. Use a confirm channel and resolve from the callback amqplib calls when the broker's ack for that message arrives, not when publish() returns.",
      timeoutMs: 12000,
      async run(t: T) {
        const proxy = await t.proxy();
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t, proxy);
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("confirmed");
        await obs.queue(t, queue, exchange, [key]);

        // Only the broker's basic.ack / basic.nack frames wait in the proxy; everything else
        // (channel.open, confirm.select, declares, the publish itself) flows.
        proxy.hold("toClient", isConfirm);
        const n = 3;
        const events = Array.from({ length: n }, (_, i) => makeEvent(t.rng, i));
        const calls = events.map((e) => startPublish(pub, key, e));

        let queued = 0;
        await waitUntil(
          t,
          async () => (queued = await obs.count(queue)) >= 1,
          3000,
          () => `The grader called publish("${key}", …) ${n} times; within 3 s no message reached a queue bound to the exchange with "${key}".`,
          () => settledTooEarly(calls, proxy, "before its message had even reached the queue"),
        );
        // The message is on the broker; now its confirm must reach the proxy (and stay there).
        await waitUntil(
          t,
          () => proxy.heldCount >= 1,
          2000,
          () => `The message reached the queue, but the broker sent no confirm (basic.ack) for it within 2 s: the channel is not in confirm mode. Create it with createConfirmChannel().`,
          () => settledTooEarly(calls, proxy, "after its message reached the queue"),
        );
        await sleep(OBSERVE_MS);
        const early = settledTooEarly(calls, proxy, `${OBSERVE_MS} ms after its message reached the queue`);
        if (early) t.fail(early);
        queued = await obs.count(queue);

        proxy.release();
        await settleAll(t, calls, 5000, `publish() after the held confirms were let through (${queued} of ${n} messages queued)`);
        const receipts = calls.map((c) => mustHaveResolved(t, c, " once the broker's confirms arrived."));
        const got = matchMessages(t, await obs.collect(t, queue, n), events, "The grader's queue");
        if (got.size !== n) t.fail(`${n} publish() calls resolved, but the grader's queue received ${got.size} of their events.`);
        calls.forEach((c, i) => {
          const id = got.get(refOf(c.event))!.properties.messageId as unknown;
          if (id !== receipts[i]) t.fail(`publish("${c.key}", …) resolved to messageId "${receipts[i]}", but the message it published carries ${describeValue(id)}.`);
        });
      },
    },
    {
      name: "a nacked message makes publish() reject, and the publisher keeps working",
      hint: "The confirm callback gets an error when the broker nacks: reject the publish with it. And one nack is about one message: keep the channel and the publisher as they are.",
      timeoutMs: 10000,
      async run(t: T) {
        const proxy = await t.proxy();
        const ledger = new ConfirmLedger(proxy);
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t, proxy);
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);
        const key = keyText(randomKey(t.rng));
        // A full queue that refuses new messages: the broker nacks any publish routed to it.
        const full = t.names.queue("full");
        await obs.queue(t, full, exchange, [key], { "x-overflow": "reject-publish", "x-max-length": 1 });
        await obs.fill(full, "grader filler");

        const first = startPublish(pub, key, makeEvent(t.rng, 1));
        await settleAll(t, [first], 5000, "publish() to a full queue");
        if (first.state === "resolved") {
          if (ledger.nacked > 0) {
            t.fail(`publish("${key}", …) resolved, but the broker nacked the message: it was routed to a queue declared with x-overflow "reject-publish" that was full. The message is not on the broker, and the caller was told it is.`);
          }
          if (ledger.total === 0) {
            t.fail(`publish("${key}", …) resolved, but its message was lost: its queue (x-overflow "reject-publish") was full, and because the channel is not in confirm mode the broker dropped it without a word. Only confirms tell a publisher that the broker refused a message.`);
          }
          t.fail(`publish("${key}", …) resolved and the broker acked its message, so it never reached the full queue the grader had bound to the exchange with "${key}". Publish to the exchange you were given, with the routing key you were given.`);
        }

        // The queue has room again: the same publisher must work as before.
        await obs.purge(full);
        const event = makeEvent(t.rng, 2);
        const second = startPublish(pub, key, event);
        await settleAll(t, [second], 5000, "publish() after a nack");
        const id = mustHaveResolved(t, second, `, after an earlier publish had been nacked and the queue had room again. A nack concerns one message: the publisher must keep working.`);
        const got = matchMessages(t, await obs.collect(t, full, 1), [event], "The queue");
        const m = got.get(refOf(event));
        if (!m) t.fail(`publish() after the nack resolved, but its message is not in the queue.`);
        if (m.properties.messageId !== id) t.fail(`publish() resolved to messageId "${id}", but its message carries ${describeValue(m.properties.messageId)}.`);
      },
    },
    {
      name: "concurrent publishes each settle on their own message's confirm",
      hint: "waitForConfirms() waits for every message outstanding on the channel, and rejects for all of them when any one is nacked. Which confirm belongs to which message? The callback of each publish knows.",
      timeoutMs: 10000,
      async run(t: T) {
        const proxy = await t.proxy();
        const ledger = new ConfirmLedger(proxy);
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t, proxy);
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);
        const goodKey = keyText(randomKey(t.rng));
        let badKey = keyText(randomKey(t.rng));
        while (badKey === goodKey) badKey = keyText(randomKey(t.rng));
        const ok = t.names.queue("ok");
        const full = t.names.queue("full");
        await obs.queue(t, ok, exchange, [goodKey]);
        await obs.queue(t, full, exchange, [badKey], { "x-overflow": "reject-publish", "x-max-length": 1 });
        await obs.fill(full, "grader filler");

        // Several requests publish at the same moment; one of them (never the first or the
        // last) is routed to the full queue and will be nacked.
        const n = t.rng.int(4, 6);
        const bad = t.rng.int(1, n - 2);
        const events = Array.from({ length: n }, (_, i) => makeEvent(t.rng, i));
        const calls = events.map((e, i) => startPublish(pub, i === bad ? badKey : goodKey, e));
        await settleAll(t, calls, 5000, `${n} concurrent publish() calls`);
        const setting = `${n} publish() calls ran at once: call #${bad + 1} with key "${badKey}" (bound to a full queue that refuses messages), the others with "${goodKey}" (bound to a queue with room).`;

        if (ledger.nacked > 1) {
          t.fail(`${setting} The broker nacked ${ledger.nacked} messages: messages published with "${goodKey}" reached the full queue too. A topic exchange routes each message by its own routing key.`);
        }
        const got = matchMessages(t, await obs.collect(t, ok, n - 1), events, "The queue for the accepted messages");
        const wronglyRejected = calls.filter((c, i) => i !== bad && c.state === "rejected");
        if (wronglyRejected.length) {
          const c = wronglyRejected[0]!;
          const truth =
            ledger.nacked === 1
              ? "although the broker acked its message (it nacked only call #" + (bad + 1) + "'s)"
              : `although the broker nacked nothing (${ledger.acked} acks)`;
          t.fail(`${setting} Call #${calls.indexOf(c) + 1} rejected with ${errText(c.error)}, ${truth}. ${wronglyRejected.length} accepted message(s) were reported as failed, and the caller will publish them again. Each publish must settle on its own message's confirm.`);
        }
        const b = calls[bad]!;
        if (b.state === "resolved") {
          if (ledger.nacked === 1) t.fail(`${setting} The broker nacked call #${bad + 1}'s message, yet that publish() resolved. Other messages' acks must not count for it.`);
          if (ledger.total === 0) {
            t.fail(`${setting} Call #${bad + 1} resolved, but its message was lost: the channel is not in confirm mode, so the broker dropped it without a word.`);
          }
          t.fail(`${setting} The broker nacked nothing, so call #${bad + 1}'s message never reached the full queue: publish with the routing key you were given.`);
        }
        const receipts = calls.map((c, i) => (i === bad ? "" : mustHaveResolved(t, c, ".")));
        if (got.size !== n - 1) t.fail(`${n - 1} publish() calls resolved, but their queue received ${got.size} of the events.`);
        calls.forEach((c, i) => {
          if (i === bad) return;
          const id = got.get(refOf(c.event))?.properties.messageId as unknown;
          if (id !== receipts[i]) t.fail(`Call #${i + 1} resolved to messageId "${receipts[i]}", but its message carries ${describeValue(id)}.`);
        });
      },
    },
    {
      name: "a publish whose connection drops before its confirm rejects",
      hint: "When the channel closes with messages still unconfirmed, amqplib calls their confirm callbacks with an error. If you track confirms yourself, you must also fail what is pending when the channel closes.",
      timeoutMs: 12000,
      async run(t: T) {
        const proxy = await t.proxy();
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t, proxy);
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("orphans");
        await obs.queue(t, queue, exchange, [key]);

        proxy.hold("toClient", isConfirm);
        const call = startPublish(pub, key, makeEvent(t.rng, 1));
        await waitUntil(
          t,
          async () => (await obs.count(queue)) >= 1 && proxy.heldCount >= 1,
          3000,
          () =>
            proxy.heldCount === 0
              ? `The grader called publish("${key}", …); within 3 s the broker sent no confirm for it (is the channel in confirm mode?).`
              : `The grader called publish("${key}", …); within 3 s its message did not reach the queue.`,
          () => settledTooEarly([call], proxy, "before its confirm arrived"),
        );
        // The network fails with the confirm in flight.
        proxy.cut();
        try {
          await settleAll(t, [call], 3000, `publish() after its connection dropped`);
        } catch (e) {
          if ((e as Error)?.name !== "CheckFailure") throw e;
          t.fail(`The connection dropped while publish("${key}", …) waited for its confirm, and 3 s later publish() had still not settled. It would wait forever: when the channel closes, every unconfirmed publish must reject.`);
        }
        if (call.state === "resolved") {
          t.fail(`The connection dropped before the broker's confirm reached your code, and publish() resolved anyway. Nobody knows whether the broker kept that message: the caller must hear "failed" so that it can publish again (consumers de-duplicate by messageId).`);
        }

        // The publisher is on a dead connection now: a new publish must fail, not hang or pretend.
        const late = startPublish(pub, key, makeEvent(t.rng, 2));
        try {
          await settleAll(t, [late], 3000, "publish() on a dropped connection");
        } catch (e) {
          if ((e as Error)?.name !== "CheckFailure") throw e;
          t.fail(`After the connection dropped, a new publish("${key}", …) had not settled within 3 s: it must reject, since the message cannot reach the broker.`);
        }
        if (late.state === "resolved") {
          t.fail(`After the connection dropped, a new publish("${key}", …) resolved, although its message could not reach the broker. Do not swallow the error from the channel: reject.`);
        }
      },
    },
    {
      name: "close() closes the publisher's channels and nothing else",
      hint: "Every channel you open, close: in close(), or right after use if you open one per publish. The connection was handed to you and the exchange is shared with consumers: leave both alone.",
      timeoutMs: 10000,
      async run(t: T) {
        const proxy = await t.proxy();
        const obs = await Observer.open(t);
        const conn = await learnerConnection(t, proxy);
        let connClosed = false;
        conn.on("close", () => (connClosed = true));
        const exchange = t.names.exchange("events");
        const pub = await newPublisher(t, conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("all");
        await obs.queue(t, queue, exchange, [key]);
        const calls = Array.from({ length: 3 }, (_, i) => startPublish(pub, key, makeEvent(t.rng, i)));
        await settleAll(t, calls, 5000, "3 publish() calls");
        for (const c of calls) mustHaveResolved(t, c, ".");
        await t.within("close()", 3000, pub.close());

        // Counted on the wire: channel.open from the client against channel.close either way.
        const open = () => frames(proxy, "toBroker", 20, 10) - frames(proxy, "toBroker", 20, 40) - frames(proxy, "toClient", 20, 40);
        const closedConnection = () => frames(proxy, "toBroker", 10, 50) > 0 || connClosed;
        const connectionMessage = `close() closed the connection it was given. The connection belongs to the caller, who may share it with other publishers and consumers: close only the channels the publisher opened.`;
        if (closedConnection()) t.fail(connectionMessage);
        await waitUntil(
          t,
          () => open() === 0,
          1000,
          () => `After close() resolved, ${open()} channel(s) the publisher opened on the connection are still open (opened ${frames(proxy, "toBroker", 20, 10)}, closed ${frames(proxy, "toBroker", 20, 40) + frames(proxy, "toClient", 20, 40)}). Channels left open pile up until the connection hits its channel limit.`,
          () => (closedConnection() ? connectionMessage : null),
        );
        // The connection still works for its owner.
        try {
          const ch = await t.within("opening a channel on the connection after close()", 3000, conn.createChannel());
          await ch.close();
        } catch (e) {
          if (closedConnection()) t.fail(connectionMessage);
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`After close(), the grader could not open a channel on the connection it had handed over (${errText(e)}): close() must leave the connection open.`);
        }
        if (closedConnection()) t.fail(connectionMessage);
        // The exchange outlives its publishers: consumers' bindings hang on it.
        const passive = await obs.throwaway();
        try {
          await passive.checkExchange(exchange);
          await passive.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) === 404) t.fail(`After close(), exchange "${exchange}" no longer exists. It is durable for a reason: consumers' queues are bound to it, and deleting it drops their bindings. close() closes channels only.`);
          throw e;
        }
      },
    },
  ],
});
