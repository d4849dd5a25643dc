/**
 * The batch-confirms grader's world: the learner's connection (built in its host, through the
 * grader's proxy), the grader's own view of the broker, the publishes and confirms decoded from
 * the wire, and the learner's publishBatch() calls watched from outside.
 */
import type { Channel, ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { CheckFailure, LabError, amqpCode, brokerText, describeValue, Pulse } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import { WirePublishes, type WirePublish } from "../../../src/kit/amqp-publishes.ts";
import type { BatchConfirmsSubmission, BatchPublisher, BatchPublisherOptions, DomainEvent, OutgoingMessage } from "../../../src/contracts/batch-confirms.ts";

export type T = CheckContext<BatchConfirmsSubmission>;
/** A connection living in the learner's host (an amqplib ChannelModel there); only passed back. */
export type RemoteConnection = object;

export const ms = (x: number) => `${Math.round(x)} ms`;
export const sleep = (n: number) => new Promise<void>((r) => setTimeout(r, n));

export function errText(e: unknown): string {
  return describeValue(e instanceof Error ? e.message : e, 200);
}

// ---------------------------------------------------------------- waiting on events

// ---------------------------------------------------------------- the grader's own view

/** The grader's own connection: declares its queues, binds them, reads messages back. */
export class Observer {
  private ch: Channel | undefined;
  constructor(readonly conn: ChannelModel) {}

  static async open(t: T, url = t.amqpUrl): Promise<Observer> {
    return new Observer(await t.rabbit.connect(url));
  }

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

  /** A grader queue bound to the learner's exchange; a missing exchange is the learner's bug. */
  async queue(t: T, queue: string, exchange: string, patterns: string[], args?: Record<string, unknown>): Promise<void> {
    const ch = await this.throwaway();
    // Exclusive to the grader's connection: gone with it, and not a transient shared queue (deprecated in RabbitMQ 4).
    await ch.assertQueue(queue, { durable: false, exclusive: true, ...(args ? { arguments: args } : {}) });
    for (const p of patterns) {
      try {
        await ch.bindQueue(queue, exchange, p);
      } catch (e) {
        if (amqpCode(e) === 404) {
          t.fail(`After createBatchPublisher(conn, "${exchange}") resolved, the grader could not bind a queue to that exchange: the broker says ${brokerText(e)}. createBatchPublisher() must declare the exchange before it resolves.`);
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

  async count(queue: string): Promise<number> {
    return (await (await this.channel()).checkQueue(queue)).messageCount;
  }

  /** Waits (briefly) until `n` messages are ready, then takes them all. */
  async collect(queue: string, n: number): Promise<GetMessage[]> {
    const until = Date.now() + 2000;
    while ((await this.count(queue)) < n && Date.now() < until) await sleep(10);
    return this.drain(queue);
  }

  async drain(queue: string): Promise<GetMessage[]> {
    const ch = await this.channel();
    const out: GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (m === false) return out;
      out.push(m);
    }
  }

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

// ---------------------------------------------------------------- the learner's side

export async function learnerConnection(t: T, host: Host, proxy: ChaosProxy): Promise<RemoteConnection> {
  try {
    return await host.cap<RemoteConnection>("amqp.connection", { url: proxy.urlFor(t.amqpUrl) });
  } catch (e) {
    throw new LabError(`Could not connect to RabbitMQ through the grader's proxy (${(e as Error).message}): run \`msglab doctor\`.`);
  }
}

export async function newPublisher(t: T, host: Host, conn: RemoteConnection, exchange: string, options?: BatchPublisherOptions): Promise<BatchPublisher> {
  const args: unknown[] = options ? [conn, exchange, options] : [conn, exchange];
  let pub: BatchPublisher;
  try {
    pub = await t.within("createBatchPublisher()", 5000, host.call<BatchPublisher>("createBatchPublisher", ...args));
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`createBatchPublisher() threw: ${errText(e)}.`);
  }
  if (!pub || typeof pub.publishBatch !== "function" || typeof pub.close !== "function") {
    t.fail(`createBatchPublisher() resolved to ${describeValue(pub)}; it must resolve to an object with publishBatch() and close() methods.`);
  }
  return pub;
}

/** One publishBatch() call, watched from outside: what the learner's promise did, and when. */
export class BatchCall {
  state: "pending" | "resolved" | "rejected" = "pending";
  value: unknown;
  error: unknown;
  readonly startedAt = performance.now();
  settledAt: number | null = null;
  readonly settled: Promise<void>;

  constructor(
    /** How messages name it: "batch A". */
    readonly label: string,
    readonly messages: OutgoingMessage[],
    pub: BatchPublisher,
    pulse: Pulse,
  ) {
    this.settled = new Promise((resolve) => resolve(pub.publishBatch(messages))).then(
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

  get ids(): string[] {
    return this.messages.map((m) => m.messageId);
  }

  get elapsed(): number {
    return (this.settledAt ?? performance.now()) - this.startedAt;
  }

  get outcome(): string {
    if (this.state === "pending") return `was still pending ${ms(this.elapsed)} after the call`;
    if (this.state === "resolved") return `resolved ${ms(this.elapsed)} after the call`;
    return `rejected with ${errText(this.error)} ${ms(this.elapsed)} after the call`;
  }

  /** The `failedIds` of the rejection, or a string saying what was wrong with its shape. */
  failedIds(): string[] | string {
    const e = this.error as { failedIds?: unknown } | null | undefined;
    const ids = e && typeof e === "object" ? e.failedIds : undefined;
    if (!Array.isArray(ids)) return `it rejected with ${describeValue(this.error)}, which has no failedIds array`;
    if (ids.some((x) => typeof x !== "string")) return `its failedIds is ${describeValue(ids)}: it must list messageIds (strings)`;
    return ids as string[];
  }
}

/** Fails unless the call resolved with exactly its batch's ids, in order. */
export function mustResolve(t: T, call: BatchCall, context: string): void {
  if (call.state === "pending") t.fail(`${lead(context, call.label)} ${call.outcome}.`);
  if (call.state === "rejected") t.fail(`${lead(context, call.label)} ${call.outcome}, although the broker had acked every message of it.`);
  const v = call.value as { messageIds?: unknown } | null | undefined;
  const want = call.ids;
  if (!v || typeof v !== "object" || !Array.isArray(v.messageIds) || v.messageIds.length !== want.length || v.messageIds.some((x, i) => x !== want[i])) {
    t.fail(`${lead(context, call.label)} resolved to ${describeValue(v, 200)}; it must resolve to { messageIds } with the batch's ${want.length} messageIds in the order given.`);
  }
}

/** Fails unless the call rejected naming exactly `expected` (batch order). */
export function mustRejectWith(t: T, call: BatchCall, expected: string[], context: string): void {
  if (call.state === "pending") t.fail(`${lead(context, call.label)} ${call.outcome}.`);
  if (call.state === "resolved") {
    t.fail(`${lead(context, call.label)} resolved, but the broker did not ack ${listIds(expected)}: the caller now believes ${expected.length === 1 ? "that message is" : "those messages are"} on the broker.`);
  }
  const got = call.failedIds();
  if (typeof got === "string") t.fail(`${lead(context, call.label)} rejected, as it should, but ${got}. The caller needs to know which messages to publish again.`);
  if (!(call.error instanceof Error)) {
    t.fail(`${lead(context, call.label)} rejected with ${describeValue(call.error, 200)}, which is not an Error: reject with an Error that carries failedIds as an own property, e.g. Object.assign(new Error("3 of 500 not confirmed"), { failedIds }).`);
  }
  const want = new Set(expected);
  const extra = got.filter((id) => !want.has(id));
  const missing = expected.filter((id) => !got.includes(id));
  const dup = got.filter((id, i) => got.indexOf(id) !== i);
  if (extra.length || missing.length || dup.length) {
    const parts = [
      missing.length ? `it leaves out ${listIds(missing)}, which the broker did not ack` : "",
      extra.length ? `it names ${listIds(extra)}, which ${extra.every((id) => call.ids.includes(id)) ? "the broker acked (the caller would publish them twice)" : "are not messageIds of this batch"}` : "",
      dup.length ? `it names ${listIds([...new Set(dup)])} more than once` : "",
    ].filter(Boolean);
    t.fail(`${lead(context, call.label)} rejected with failedIds ${describeValue(got, 240)}: ${parts.join("; ")}. failedIds must be exactly the messages the broker did not ack: ${listIds(expected)}.`);
  }
  const order = call.ids.filter((id) => want.has(id));
  if (got.some((id, i) => id !== order[i])) t.fail(`${lead(context, call.label)} rejected with failedIds ${describeValue(got, 240)}: the right ids, but not in batch order (${describeValue(order, 240)}).`);
}

/** `context` followed by `label`, capitalised when the context ends a sentence. */
export function lead(context: string, label: string): string {
  const c = context.trimEnd();
  const l = /[.:!?]$/.test(c) || c === "" ? label.charAt(0).toUpperCase() + label.slice(1) : label;
  return c ? `${c} ${l}` : l;
}

export function listIds(ids: string[], max = 6): string {
  const shown = ids.slice(0, max).map((id) => describeValue(id));
  return ids.length > max ? `${shown.join(", ")} and ${ids.length - max} more` : shown.join(", ");
}

// ---------------------------------------------------------------- the wire, per message

/** The learner's publishes on the proxy, by messageId (the grader's own baseline publishes are on other connections). */
export class Ledger {
  private readonly byId = new Map<string, WirePublish>();
  private readonly perLink = new Map<number, number>();
  constructor(
    readonly wire: WirePublishes,
    pulse: Pulse,
    proxy: ChaosProxy,
  ) {
    proxy.tap("toBroker", (f) => {
      if (f.type === 1 && f.classId === 60 && f.methodId === 40) this.perLink.set(f.link, (this.perLink.get(f.link) ?? 0) + 1);
    });
    wire.onPublish((p) => {
      const id = p.properties?.messageId;
      if (typeof id === "string" && !this.byId.has(id)) this.byId.set(id, p);
    });
    wire.onChange(() => pulse.poke());
  }

  /** basic.publish frames that have reached the proxy on one connection (a gate's predicate sees the current one counted). */
  publishesOn(link: number): number {
    return this.perLink.get(link) ?? 0;
  }

  of(id: string): WirePublish | undefined {
    return this.byId.get(id);
  }

  /** Forgets these messages' publishes, so that the next publish of the same messageId (a retry) is the one tracked. */
  forget(ids: string[]): void {
    for (const id of ids) this.byId.delete(id);
  }

  /** How many of these messages have crossed the proxy. */
  crossed(ids: string[]): number {
    let n = 0;
    for (const id of ids) if (this.byId.has(id)) n++;
    return n;
  }

  /** Whether the broker has answered for every one of these (the answer may still be held). */
  answered(ids: string[]): boolean {
    return ids.every((id) => this.byId.get(id)?.confirm);
  }

  /** Whether every one of these messages' confirms has been let through to the learner's connection. */
  passed(ids: string[]): boolean {
    return ids.every((id) => this.byId.get(id)?.confirm?.passedAt != null);
  }

  nacked(ids: string[]): string[] {
    return ids.filter((id) => this.byId.get(id)?.confirm?.how === "nack");
  }

  /** "its message (delivery tag 4) was acked by the broker, and the ack was held at the proxy", for messages. */
  fate(id: string): string {
    const p = this.byId.get(id);
    if (!p) return `message ${describeValue(id)} had not crossed the proxy`;
    if (p.tag === 0) return `message ${describeValue(id)} went out on channel ${p.channel}, which is not in confirm mode, so the broker never answers for it`;
    if (!p.confirm) return `the broker had not answered for message ${describeValue(id)} (delivery tag ${p.tag}) yet`;
    const c = p.confirm;
    const frame = c.multiple && c.covered.length > 1 ? ` (in one basic.${c.how} with multiple set, for delivery tags up to ${c.tag})` : "";
    return `the broker's ${c.how} for message ${describeValue(id)} (delivery tag ${p.tag})${frame} ${c.passedAt === null ? "was held at the proxy" : "had reached your connection"}`;
  }

  /** The first of these whose confirm has not reached the learner, for messages. */
  firstNotPassed(ids: string[]): string | undefined {
    return ids.find((id) => this.byId.get(id)?.confirm?.passedAt == null);
  }
}

// ---------------------------------------------------------------- messages

const ENTITIES = ["order", "payment", "shipment", "invoice"] as const;
const ACTIONS = ["created", "updated", "cancelled", "settled"] as const;
const REGIONS = ["eu", "us", "apac"] as const;
const SKUS = ["bolt-m4", "gear-12", "belt \"800\"", "valve-3/4", "fuse-10a ⚡"];
const NOTES = ["", "gift wrap", "leave at the door ✓", "Zürich depot", 'rush "today"'];
const SEPARATORS = [":", " ", '"', "'", "-", "/"];

export function randomKey(rng: Rng): string {
  return `${rng.pick(ENTITIES)}.${rng.pick(ACTIONS)}.${rng.pick(REGIONS)}`;
}

/** Two different routing keys. */
export function twoKeys(rng: Rng): [string, string] {
  const a = randomKey(rng);
  let b = randomKey(rng);
  while (b === a) b = randomKey(rng);
  return [a, b];
}

function hex(rng: Rng, digits = 8): string {
  return Math.floor(rng.next() * 16 ** digits)
    .toString(16)
    .padStart(digits, "0");
}

export function makeEvent(rng: Rng): DomainEvent {
  return {
    type: rng.pick(["OrderPlaced", "PaymentCaptured", "ParcelShipped"]),
    orderId: `o-${hex(rng, 6)}`,
    amount: rng.int(100, 999_999) / 100,
    currency: rng.pick(["EUR", "USD", "GBP"]),
    lines: Array.from({ length: rng.int(1, 3) }, () => ({ sku: rng.pick(SKUS), qty: rng.int(1, 50) })),
    note: rng.pick(NOTES),
  };
}

/**
 * A batch of `n` messages with ids that carry quotes, colons, spaces and slashes, each unique;
 * `keyOf(i)` gives message i's routing key. Small batches carry full events; large ones (`lean`)
 * small bodies, so thousands cost the broker little.
 */
export function makeBatch(rng: Rng, tag: string, n: number, keyOf: (i: number) => string, lean = false): OutgoingMessage[] {
  const salt = hex(rng, 6);
  return Array.from({ length: n }, (_, i) => {
    const sep = SEPARATORS[i % SEPARATORS.length]!;
    return {
      messageId: `${tag}${sep}${i + 1}${sep}${salt}`,
      routingKey: keyOf(i),
      event: lean ? { n: i + 1, batch: tag } : makeEvent(rng),
    };
  });
}

// ---------------------------------------------------------------- a check's world

export interface World {
  host: Host;
  obs: Observer;
  proxy: ChaosProxy;
  wire: WirePublishes;
  ledger: Ledger;
  pulse: Pulse;
  conn: RemoteConnection;
  exchange: string;
}

/** The learner's host with a connection through a fresh proxy (decoded from its first frame), and the grader's own connection. */
export async function arrange(t: T): Promise<World> {
  const [host, obs, proxy] = await Promise.all([t.learnerHost(), Observer.open(t), t.proxy()]);
  const pulse = new Pulse();
  const wire = new WirePublishes(proxy);
  const ledger = new Ledger(wire, pulse, proxy);
  const conn = await learnerConnection(t, host, proxy);
  return { host, obs, proxy, wire, ledger, pulse, conn, exchange: t.names.exchange("events") };
}

/** The exchange as the broker has it: null when it is a durable topic exchange, else what differs, in words. */
export async function probeExchange(obs: Observer, exchange: string): Promise<string | null> {
  if (!(await obs.exchangeExists(exchange))) return `the broker has no exchange named "${exchange}". Declare it in createBatchPublisher(), before it resolves.`;
  const probe = await obs.throwaway();
  try {
    await probe.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
    await probe.close().catch(() => {});
    return null;
  } catch (e) {
    if (amqpCode(e) !== 406) throw e;
    const said = brokerText(e);
    const m = /inequivalent arg '([^']+)'.*received '([^']*)' but current is '([^']*)'/.exec(said);
    const [arg, current] = m ? [m[1], m[3]] : [undefined, undefined];
    if (arg === "type") return `it is a ${current} exchange, not a topic exchange (the broker refused the grader's re-declaration: ${said}). Consumers bind with patterns such as "order.*.eu"; only a topic exchange routes on them.`;
    if (arg === "durable") return `it is not durable (the broker says: ${said}). A non-durable exchange is gone after a broker restart, and persistent messages need a durable path to survive one.`;
    if (arg === "auto_delete") return `it is auto-delete (the broker says: ${said}): it vanishes when its last queue unbinds.`;
    return `the broker refused the grader's declaration of a durable topic exchange named "${exchange}": ${said}.`;
  }
}

/** Publishes one at a time on a confirm channel, awaiting each confirm: the per-message baseline. */
export async function publishOneByOne(ch: ConfirmChannel, exchange: string, messages: OutgoingMessage[]): Promise<number> {
  const t0 = performance.now();
  for (const m of messages) {
    await new Promise<void>((resolve, reject) =>
      ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => (err ? reject(err) : resolve())),
    );
  }
  return performance.now() - t0;
}
