/**
 * The retry-dlq-consumer grader's world: the learner's consumer processes (hosts) on connections
 * through the grader's proxy, the grader's own connection to the broker, the messages it
 * publishes, the handler the learner's consumer calls, and the judges that read the wire.
 *
 * Everything decided here comes from outside the learner's process: the frames on the proxy
 * (deliveries with their x-retry-count header, acks, nacks and rejects, the retry copies with
 * their headers and the broker's confirms for them), the queues as the broker reports them to
 * the grader's own connection, and the calls into the grader's handler.
 */
import type { Channel, ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { CheckFailure, LabError, WireDeliveries, describeValue, Pulse } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Delivery, Host, Rng, Settlement } from "../../../src/kit/index.ts";
import { WirePublishes, type WirePublish } from "../../../src/kit/amqp-publishes.ts";
import type { IncomingMessage, RetryConsumer, RetryDlqSubmission, RetryOptions } from "../../../src/contracts/retry-dlq-consumer.ts";

export type T = CheckContext<RetryDlqSubmission>;
export type RemoteConnection = object;

export const ms = (x: number) => `${Math.round(x)} ms`;
export const sleep = (n: number) => new Promise<void>((r) => setTimeout(r, n));
/** A redelivery may come this much before the TTL by the grader's clock (timer granularity), never more. */
export const TTL_TOLERANCE_MS = 8;
/** How long a learner call (setup, start) may take. */
export const CALL_MS = 5000;

export function errText(e: unknown): string {
  return describeValue(e instanceof Error ? e.message : e, 200);
}

export interface Topo {
  main: string;
  retry: string;
  dlx: string;
  dlq: string;
}

export function topoFor(main: string): Topo {
  return { main, retry: `${main}.retry`, dlx: `${main}.dlx`, dlq: `${main}.dlq` };
}

/** A queue name unique to this check (the grading's vhost goes at the end; without one, registered for cleanup). */
export function queueName(t: T, base: string): string {
  const vhost = decodeURIComponent(new URL(t.amqpUrl).pathname.slice(1));
  if (vhost.startsWith("msglab-")) return `${t.names.prefix}.${base}`;
  const main = t.names.queue(base);
  for (const s of [".retry", ".dlq"]) t.names.queue(`${base}${s}`);
  t.names.exchange(`${base}.dlx`);
  return main;
}

// ---------------------------------------------------------------- waiting on events

// ---------------------------------------------------------------- messages

const SEPARATORS = [":", " ", '"', "'", "-", "/"];
const CUSTOMERS = ["acme", "Zürich Ärztehaus", 'O\'Brien "Bulk" Ltd', "globex: east", "初音 trading"];

export interface Msg {
  id: string;
  body: Record<string, unknown>;
  /** Headers the grader publishes it with (a producer's own, or an x-death from elsewhere); none at all on some. */
  headers?: Record<string, unknown>;
  /** The other message properties the producer set: a copy keeps them. */
  props: Record<string, string | number>;
}

/** The message properties a copy must carry over unchanged (besides messageId, headers and persistence). */
export const KEPT_PROPERTIES = ["contentType", "contentEncoding", "correlationId", "replyTo", "appId", "type", "timestamp", "priority"] as const;

export function makeMsgs(rng: Rng, tag: string, n: number): Msg[] {
  const salt = Math.floor(rng.next() * 0xffffff)
    .toString(16)
    .padStart(6, "0");
  return Array.from({ length: n }, (_, i) => {
    const sep = rng.pick(SEPARATORS);
    return {
      id: `${tag}${sep}${i + 1}${sep}${salt}`,
      body: { orderId: `o-${salt}-${i + 1}`, customer: rng.pick(CUSTOMERS), amount: rng.int(100, 99_999) / 100, lines: Array.from({ length: rng.int(1, 3) }, () => ({ sku: rng.pick(["bolt-m4", "gear:12", 'belt "800"']), qty: rng.int(1, 9) })) },
      // The producer's own headers (a retry copy keeps them); every other message has none at all.
      ...(i % 2 === 0 ? { headers: { tenant: rng.pick(["acme", "globex", "initech"]), "trace-id": `${salt}-${i + 1}-${rng.int(1000, 9999)}` } } : {}),
      props: {
        contentType: "application/json",
        contentEncoding: "utf-8",
        correlationId: `corr:${salt}:${i + 1}`,
        replyTo: `replies.${rng.pick(["billing", "shipping"])}`,
        appId: rng.pick(["checkout", "billing-api"]),
        type: rng.pick(["PaymentRequested", "InvoiceIssued"]),
        timestamp: Math.floor(Date.now() / 1000) - rng.int(0, 3600),
        priority: rng.int(0, 9),
      },
    };
  });
}

// ---------------------------------------------------------------- the handler

export type Act = "ok" | "fail" | "kill";

export interface Call {
  /** 1-based over every call of the handler. */
  n: number;
  id: string;
  /** What the learner's consumer passed. */
  arg: IncomingMessage;
  /** How many calls for this id so far, this one included. */
  nth: number;
  /** The delivery on the wire that carried it (null: none did). */
  delivery: Delivery | null;
  /** The x-retry-count header of that delivery on the wire (0 when absent; null: unknown). */
  wireCount: number | null;
  startedAt: number;
  endedAt: number | null;
  state: "running" | "ok" | "failed" | "killed";
  /** What the grader decided the call does (set as it starts). */
  act?: Act;
}

// ---------------------------------------------------------------- one consumer process

export interface Run {
  n: number;
  host: Host;
  /** The proxy link of its connection. */
  link: number;
  consumer: RetryConsumer | null;
}

// ---------------------------------------------------------------- the world

export interface WorldOptions extends RetryOptions {
  /** The grader declares the topology itself (the checks of the consumer), instead of the learner's setup. */
  declare: boolean;
}

export class World {
  readonly pulse = new Pulse();
  readonly wire: WirePublishes;
  readonly dels: WireDeliveries;
  readonly topo: Topo;
  readonly sent = new Map<string, Msg>();
  readonly calls: Call[] = [];
  readonly runs: Run[] = [];
  readonly violations: string[] = [];
  /** When each delivery reached the proxy, and when each settlement did. */
  readonly deliveredAt = new Map<Delivery, number>();
  readonly settledAt = new WeakMap<Settlement["frame"], number>();
  /** The handler's say for each call; by default it fails each id `failures.get(id)` times (Infinity: always). */
  // Calls already told to fail count, finished or not: a consumer that runs two deliveries of one
  // message side by side (a duplicate after a crash) still sees it fail `failures` times in all.
  plan: (call: Call) => Act = (call) => (this.calls.filter((c) => c.id === call.id && c.act === "fail").length < (this.failures.get(call.id) ?? 0) ? "fail" : "ok");
  readonly failures = new Map<string, number>();
  private readonly claimed = new Set<Delivery>();
  /** Hosts the grader SIGKILLed on purpose (a crash point). */
  readonly killed = new Set<Host>();
  private maxLink = 0;

  private constructor(
    readonly t: T,
    readonly proxy: ChaosProxy,
    readonly gconn: ChannelModel,
    readonly gch: ConfirmChannel,
    readonly options: RetryOptions,
    main: string,
  ) {
    this.topo = topoFor(main);
    // The publish tracker first: its tap decodes a delivery's headers before WireDeliveries reports it.
    this.wire = new WirePublishes(proxy);
    this.dels = new WireDeliveries(proxy);
    proxy.tap("toBroker", (f) => {
      this.maxLink = Math.max(this.maxLink, f.link);
    });
    this.wire.onChange(() => this.pulse.poke());
    this.wire.onPublish((p) => this.judgePublish(p));
    this.dels.onDeliver((d) => {
      this.deliveredAt.set(d, performance.now());
      this.judgeDelivery(d);
      this.pulse.poke();
    });
    this.dels.onSettle((ds, s) => {
      this.settledAt.set(s.frame, performance.now());
      for (const d of ds) this.judgeSettlement(d, s);
      this.pulse.poke();
    });
  }

  static async create(t: T, base: string, opts: WorldOptions): Promise<World> {
    const main = queueName(t, base);
    const [proxy, gconn] = await Promise.all([t.proxy(), t.rabbit.connect()]);
    const gch = await gconn.createConfirmChannel();
    gch.on("error", () => {});
    const w = new World(t, proxy, gconn, gch, { maxRetries: opts.maxRetries, retryDelayMs: opts.retryDelayMs }, main);
    if (opts.declare) await declareReference(gch, w.topo, opts.retryDelayMs);
    return w;
  }

  /** The handler one consumer process gets: its own function, so each call is known to come from that process. */
  handlerFor(run: Run): (m: IncomingMessage) => Promise<void> {
    return (m: IncomingMessage) => this.onCall(m, run);
  }

  // ------------------------------------------------------------ the grader's side of the broker

  /** Publishes to the main queue on the grader's own confirm channel, and waits for the broker's confirms. */
  async publish(msgs: Msg[]): Promise<void> {
    for (const m of msgs) {
      this.sent.set(m.id, m);
      this.gch.sendToQueue(this.topo.main, Buffer.from(JSON.stringify(m.body)), { ...m.props, persistent: true, messageId: m.id, ...(m.headers ? { headers: m.headers } : {}) });
    }
    await this.gch.waitForConfirms();
  }

  async count(queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    const ch = await this.gconn.createChannel();
    ch.on("error", () => {});
    try {
      return await ch.checkQueue(queue);
    } finally {
      await ch.close().catch(() => {});
    }
  }

  async drain(queue: string): Promise<GetMessage[]> {
    const ch = await this.gconn.createChannel();
    ch.on("error", () => {});
    const out: GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (m === false) break;
      out.push(m);
    }
    await ch.close().catch(() => {});
    return out;
  }

  // ------------------------------------------------------------ the learner's consumer processes

  /** Starts a consumer process: the check's first host, or a new one (a restart), on a connection through the proxy. */
  async start(): Promise<Run> {
    const host = this.runs.length === 0 ? await this.t.learnerHost() : await this.t.host();
    let conn: RemoteConnection;
    try {
      conn = await host.cap<RemoteConnection>("amqp.connection", { url: this.proxy.urlFor(this.t.amqpUrl) });
    } catch (e) {
      throw new LabError(`Could not connect to RabbitMQ through the grader's proxy (${(e as Error).message}): run \`msglab doctor\`.`);
    }
    const run: Run = { n: this.runs.length + 1, host, link: this.maxLink, consumer: null };
    this.runs.push(run);
    void host.exited.then(() => this.pulse.poke());
    try {
      run.consumer = await this.t.within("startRetryConsumer()", CALL_MS, host.call<RetryConsumer>("startRetryConsumer", conn, this.topo.main, this.handlerFor(run), this.options));
    } catch (e) {
      if ((e as Error)?.name === "CheckFailure") throw e;
      // The grader's own crash point may land before startRetryConsumer() has returned (its first
      // delivery can reach the handler first): that is the plan, not the learner's error.
      if (this.killed.has(host)) return run;
      this.t.fail(`startRetryConsumer() threw: ${errText(e)}.`);
    }
    if (!run.consumer || typeof run.consumer.stop !== "function") this.t.fail(`startRetryConsumer() resolved to ${describeValue(run.consumer)}; it must resolve to an object with a stop() method.`);
    return run;
  }

  /** SIGKILLs a consumer process at a crash point the grader chose. */
  kill(run: Run): Promise<unknown> {
    this.killed.add(run.host);
    return run.host.kill();
  }

  runOf(link: number): Run | undefined {
    return this.runs.find((r) => r.link === link);
  }

  /** Waits until `cond`, failing at once on the first violation the wire judges found (or an error that escaped the learner's code). */
  until(cond: () => boolean, ms: number, message: () => string): Promise<void> {
    return this.pulse.until(cond, ms, message, () => this.problem());
  }

  /** Waits `ms` with the judges watching. */
  watch(ms: number): Promise<void> {
    return this.pulse.until(() => false, ms, null, () => this.problem());
  }

  problem(): string | null {
    if (this.violations.length) return this.violations[0]!;
    for (const r of this.runs) if (r.host.escaped.length) return `An error escaped your consumer (process ${r.n}): ${errText(r.host.escaped[0])}.`;
    return null;
  }

  violate(msg: string): void {
    if (!this.violations.includes(msg)) this.violations.push(msg);
    this.pulse.poke();
  }

  // ------------------------------------------------------------ the handler

  private onCall(m: IncomingMessage, run: Run): Promise<void> {
    const id = String((m as { messageId?: unknown } | null)?.messageId);
    const delivery = this.match(id, run.link, (m as { retryCount?: unknown } | null)?.retryCount);
    const wireCount = delivery ? this.countOf(delivery) : null;
    const call: Call = {
      n: this.calls.length + 1,
      id,
      arg: m,
      nth: this.calls.filter((c) => c.id === id).length + 1,
      delivery,
      wireCount,
      startedAt: performance.now(),
      endedAt: null,
      state: "running",
    };
    this.calls.push(call);
    if (delivery) this.claimed.add(delivery);
    if (!this.sent.has(id)) this.violate(`The handler was called with messageId ${describeValue(id)}, which is not a message the grader published (it got ${describeValue(m, 200)}). Pass the message's messageId property.`);
    else if (!delivery) this.violate(`The handler was called for ${describeValue(id)}, but no delivery of that message on your connection matches: consume on the connection you were given, and call the handler once per delivery.`);
    else if (JSON.stringify(m.body) !== JSON.stringify(this.sent.get(id)!.body)) this.violate(`The handler got body ${describeValue(m.body, 160)} for ${describeValue(id)}; the message's body was ${describeValue(this.sent.get(id)!.body, 160)}: pass JSON.parse of the body.`);
    else if (m.retryCount !== wireCount) {
      this.violate(
        `The handler got retryCount ${describeValue(m.retryCount)} for ${describeValue(id)}, but the delivery on the wire carries x-retry-count ${wireCount === 0 ? "none (0)" : wireCount}. The count is the message's x-retry-count header (0 when absent), not a counter in your process nor x-death.`,
      );
    }
    this.pulse.poke();
    const act = (call.act = this.plan(call));
    if (act === "kill") {
      call.state = "killed";
      void this.kill(run);
      return new Promise<void>(() => {});
    }
    return sleep(this.t.rng.int(0, 2)).then(() => {
      call.endedAt = performance.now();
      call.state = act === "ok" ? "ok" : "failed";
      this.pulse.poke();
      if (act === "fail") throw new Error(`grader: simulated failure of ${id} (call ${call.nth})`);
    });
  }

  /**
   * The delivery a handler call is for: of the deliveries of this message on the calling
   * process's connection that no call has claimed yet (two may be in flight at once after a crash
   * left a duplicate), the first whose x-retry-count on the wire is the retryCount the call got;
   * else the latest (and the call is then judged against what the wire says).
   */
  private match(id: string, link: number, retryCount: unknown): Delivery | null {
    const open = this.dels.deliveries.filter((d) => d.messageId === id && d.link === link && !this.claimed.has(d) && d.settled === null);
    return open.find((d) => this.countOf(d) === retryCount) ?? open.at(-1) ?? null;
  }

  /** The x-retry-count a delivery carried on the wire: 0 when absent, null when unknown. */
  countOf(d: Delivery): number | null {
    const h = this.wire.headersOfDelivery(d.frame);
    if (h === undefined || h === null) return null;
    const v = h["x-retry-count"];
    if (v === undefined) return 0;
    const n = typeof v === "number" ? v : Number(v);
    return Number.isFinite(n) ? n : null;
  }

  callsOf(id: string): Call[] {
    return this.calls.filter((c) => c.id === id);
  }

  failuresOf(id: string): number {
    return this.calls.filter((c) => c.id === id && c.state === "failed").length;
  }

  applied(id: string): number {
    return this.calls.filter((c) => c.id === id && c.state === "ok").length;
  }

  callOf(d: Delivery): Call | undefined {
    return this.calls.find((c) => c.delivery === d);
  }

  /** Copies of a message the learner published (retry or DLQ), in wire order. */
  copiesOf(id: string): WirePublish[] {
    return this.wire.publishes.filter((p) => p.properties?.messageId === id);
  }

  /** Deliveries of a message on the wire. */
  deliveriesOf(id: string): Delivery[] {
    return this.dels.deliveries.filter((d) => d.messageId === id);
  }

  /** Whether everything a live consumer process received has been settled on the wire (a dead one's go back by themselves). */
  allSettled(): boolean {
    return this.dels.deliveries.every((d) => d.settled !== null || !this.runOf(d.link)?.host.alive);
  }

  /** The deliveries a live process has not settled, in words (empty when none). */
  unsettledText(): string {
    const open = this.dels.deliveries.filter((d) => d.settled === null && this.runOf(d.link)?.host.alive);
    if (!open.length) return "";
    const one = (d: Delivery) => {
      const c = this.callOf(d);
      const copy = c?.state === "failed" ? this.copiesOf(String(d.messageId)).find((p) => p.at >= (c.endedAt ?? 0) - 1) : undefined;
      const state = !c ? "the handler was not called for it" : c.state === "failed" ? `the handler failed on it${copy ? `, its copy was published${copy.confirm ? ` and ${copy.confirm.how}ed by the broker` : ""}` : ", and no copy was published"}` : `the handler ${c.state === "ok" ? "succeeded" : "was still working"}`;
      return `${describeValue(d.messageId)} (x-retry-count ${this.countOf(d) ?? "?"}): ${state}`;
    };
    return ` ${open.length} deliver${open.length === 1 ? "y was" : "ies were"} never acked, nacked or rejected: ${open.slice(0, 3).map(one).join("; ")}.`;
  }

  // ------------------------------------------------------------ judges (online, from the wire)

  private where(p: WirePublish): "retry" | "dlq" | "main" | "other" {
    const { exchange, routingKey } = p;
    if (exchange === "" && routingKey === this.topo.retry) return "retry";
    if ((exchange === this.topo.dlx && routingKey === this.topo.dlq) || (exchange === "" && routingKey === this.topo.dlq)) return "dlq";
    if (exchange === "" && routingKey === this.topo.main) return "main";
    return "other";
  }

  /** The retry count (from the wire) of the failed delivery a copy answers: the latest failure of this message on the copy's connection before it. */
  // Two deliveries of one message can fail side by side in one process (a duplicate a crash left,
  // on a consumer with a prefetch above 1): a copy answers the failure whose count it fits, once,
  // or again when the broker refused (nacked) the copy that answered it before.
  private lastFailedCount(id: string, p: WirePublish, fits: (k: number | null) => boolean): number | null {
    const open = (c: Call) => {
      const before = this.answered.get(c);
      return before === undefined || before.confirm?.how === "nack";
    };
    const failed = this.calls.filter((c) => c.id === id && c.state === "failed" && c.delivery?.link === p.link && (c.endedAt ?? Infinity) <= p.at + 1 && open(c));
    const chosen = failed.find((c) => fits(c.wireCount)) ?? failed.at(-1);
    if (!chosen) return null;
    this.answered.set(chosen, p);
    return chosen.wireCount;
  }
  private readonly answered = new Map<Call, WirePublish>();

  private judgePublish(p: WirePublish): void {
    const id = p.properties?.messageId;
    if (typeof id !== "string" || !this.sent.has(id)) return;
    const what = `Your consumer published a copy of ${describeValue(id)}`;
    const where = this.where(p);
    const header = p.headers?.["x-retry-count"];
    const count = typeof header === "number" ? header : header === undefined ? undefined : Number(header);
    const k = this.lastFailedCount(id, p, (wc) => wc !== null && (where === "retry" ? wc + 1 : wc) === count);
    if (where === "main") return this.violate(`${what} straight back to the main queue (exchange "", routing key "${p.routingKey}"): it comes back at once, with no wait. A retry goes to the retry queue "${this.topo.retry}", where it waits retryDelayMs before the broker dead-letters it back.`);
    if (where === "other") return this.violate(`${what} to exchange ${describeValue(p.exchange)} with routing key ${describeValue(p.routingKey)}; a retry goes to "${this.topo.retry}" through the default exchange (routing key "${this.topo.retry}"), and a dead letter to the DLQ.`);
    if (p.tag === 0) return this.violate(`${what} on channel ${p.channel}, which is not in confirm mode: your code cannot know when the broker has the copy, so it cannot know when it is safe to ack the original. Publish copies on a confirm channel and ack after the broker's ack.`);
    const body = JSON.stringify(this.sent.get(id)!.body);
    if (!p.body || !p.body.equals(Buffer.from(body))) return this.violate(`${what} with body ${describeValue(p.body?.toString("utf8"), 120)}; a copy carries the original's body unchanged: ${describeValue(body, 120)}.`);
    if (p.properties?.deliveryMode !== 2) return this.violate(`${what} with delivery mode ${describeValue(p.properties?.deliveryMode)}: a copy is persistent (2), or a broker restart loses the message while it waits.`);
    const sent = this.sent.get(id)!;
    for (const key of KEPT_PROPERTIES) {
      const had = sent.props[key];
      const got = (p.properties as Record<string, unknown> | null)?.[key];
      if (had !== undefined && got !== had) return this.violate(`${what} whose ${key} property is ${describeValue(got)}; the original's was ${describeValue(had)}. A copy carries the original's properties over (contentType, correlationId, replyTo, appId, type, timestamp, …).`);
    }
    const own = sent.headers ?? {};
    for (const [key, value] of Object.entries(own)) {
      if (key === "x-retry-count" || key === "x-death") continue;
      if (JSON.stringify(p.headers?.[key]) !== JSON.stringify(value)) {
        return this.violate(`${what} whose header ${describeValue(key)} is ${describeValue(p.headers?.[key])}; the producer set it to ${describeValue(value)}. A copy keeps the original's headers and only sets x-retry-count.`);
      }
    }
    if (header !== undefined && typeof header !== "number") return this.violate(`${what} with x-retry-count ${describeValue(header)} (${typeof header}); the count is an integer header (a number in amqplib).`);
    if (count === undefined) return this.violate(`${what} to the ${where === "retry" ? "retry queue" : "DLQ"} without an x-retry-count header: the retry count must live in the message, or the next delivery (or a restarted consumer) cannot know how often it was retried.`);
    if (k === null) return this.violate(`${what} (x-retry-count ${describeValue(header)}) before the handler had failed for it.`);
    const want = where === "retry" ? k + 1 : k;
    if (count !== want || !Number.isInteger(count)) {
      return this.violate(
        `${what} to the ${where === "retry" ? "retry queue" : "DLQ"} with x-retry-count ${describeValue(header)}, after the handler failed on a delivery that carried x-retry-count ${k}: expected ${want}. ${where === "retry" ? "Each retry adds one to the count the message carried." : "A dead letter keeps the count of its last delivery."}`,
      );
    }
    if (where === "retry" && k >= this.options.maxRetries) return this.violate(`${what} to the retry queue (x-retry-count ${count}), but maxRetries is ${this.options.maxRetries}: after ${k} retries the message goes to the DLQ.`);
    if (where === "dlq" && k < this.options.maxRetries) return this.violate(`${what} to the DLQ after ${k} retries; maxRetries is ${this.options.maxRetries}, so it gets ${this.options.maxRetries - k} more.`);
  }

  private judgeDelivery(d: Delivery): void {
    const id = d.messageId;
    if (!id || !this.sent.has(id)) return;
    const c = this.countOf(d);
    if (!c) return;
    // A retry coming back: it must have waited the TTL since its copy was published. With
    // duplicates (a crash between a copy and its ack) several copies carry the same count: the
    // earliest one is the most lenient match.
    const at = this.deliveredAt.get(d)!;
    const copy = this.copiesOf(id).find((p) => this.where(p) === "retry" && p.headers?.["x-retry-count"] === c && p.at <= at);
    if (!copy) return;
    const gap = at - copy.at;
    if (gap < this.options.retryDelayMs - TTL_TOLERANCE_MS) {
      this.violate(`${describeValue(id)} came back with x-retry-count ${c} ${ms(gap)} after its copy was published, but the retry queue holds each copy ${this.options.retryDelayMs} ms (its x-message-ttl): the wait must happen in the retry queue.`);
    }
  }

  private judgeSettlement(d: Delivery, s: Settlement): void {
    const id = d.messageId;
    if (!id || !this.sent.has(id)) return;
    if (s.how === "closed" || s.how === "recover") return;
    const call = this.callOf(d);
    const at = this.settledAt.get(s.frame) ?? performance.now();
    const k = this.countOf(d) ?? 0;
    const verb = s.how === "ack" ? "acked" : s.how === "nack" ? `nacked (requeue ${s.requeue})` : `rejected (requeue ${s.requeue})`;
    const head = `Your consumer ${verb} the delivery of ${describeValue(id)} (x-retry-count ${k})`;
    if (!call) return this.violate(`${head} before the handler had been called for it.`);
    if (call.state === "running" || call.state === "killed") return this.violate(`${head} while the handler was still working on it.`);
    if (call.state === "ok") {
      if (s.how !== "ack") this.violate(`${head} after the handler succeeded on it: a handled message is acked.`);
      return;
    }
    // The handler failed on it.
    const copies = this.copiesOf(id).filter((p) => p.at >= (call.endedAt ?? 0) - 1 && this.where(p) !== "main");
    // A copy the broker refused may be published again: the one that counts is the one confirmed.
    const copy = copies.find((p) => p.confirm?.how === "ack" && p.confirm.passedAt !== null && p.confirm.passedAt <= at) ?? copies[0];
    if (s.requeue) {
      if (copy?.confirm?.how === "nack") return; // the copy was refused: handling it again is right
      return this.violate(`${head} after the handler failed on it. With requeue the broker hands it back at once: no wait, and the count in the message never changes, so a message that always fails loops forever. Publish a copy to the retry queue (x-retry-count + 1), then ack the original.`);
    }
    if (s.how !== "ack") {
      if (k < this.options.maxRetries) this.violate(`${head} after the handler failed on it, so the broker dead-lettered it to the DLQ after ${k} retries; maxRetries is ${this.options.maxRetries}.`);
      return;
    }
    // An ack of a failed delivery: only once the broker has confirmed its copy.
    if (!copy) return this.violate(`${head} after the handler failed on it, before publishing its copy to the retry queue: the broker has forgotten the message, and if your process dies now it is lost. Publish the copy, wait for the broker's confirm, then ack.`);
    if (!copy.confirm || copy.confirm.passedAt === null || copy.confirm.passedAt > at) {
      return this.violate(`${head} after publishing its copy, but before the broker's confirm for that copy had reached your connection (${copy.confirm ? "the grader was holding it" : "the broker had not even answered"}): if the broker did not take the copy, the message is lost. Ack only after the copy is confirmed.`);
    }
    if (copy.confirm.how === "nack") return this.violate(`${head} although the broker nacked its copy: neither exists now. Keep the original (nack it with requeue) when the copy is refused.`);
  }
}

/** The topology as the contract specifies it, declared by the grader (checks of the consumer alone). */
export async function declareReference(ch: Channel, topo: Topo, ttl: number): Promise<void> {
  await ch.assertExchange(topo.dlx, "direct", { durable: true });
  await ch.assertQueue(topo.dlq, { durable: true });
  await ch.bindQueue(topo.dlq, topo.dlx, topo.dlq);
  await ch.assertQueue(topo.main, { durable: true, deadLetterExchange: topo.dlx, deadLetterRoutingKey: topo.dlq });
  await ch.assertQueue(topo.retry, { durable: true, messageTtl: ttl, deadLetterExchange: "", deadLetterRoutingKey: topo.main });
}

/** "2 calls (failed, ok)" for a message, for failure messages. */
export function history(w: World, id: string): string {
  const calls = w.callsOf(id);
  if (calls.length === 0) return "the handler was never called for it";
  return `the handler was called ${calls.length} time(s) for it (${calls.map((c) => `${c.state}${c.wireCount !== null ? ` at x-retry-count ${c.wireCount}` : ""}`).join(", ")})`;
}

export function headerCount(m: GetMessage): unknown {
  return (m.properties.headers as Record<string, unknown> | undefined)?.["x-retry-count"];
}
