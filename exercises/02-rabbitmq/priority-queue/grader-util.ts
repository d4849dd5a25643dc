/**
 * The priority-queue grader's world: the learner's host with a channel through the grader's
 * proxy, the grader's own connection to the broker, the orders, the handler the learner's
 * consumer calls, and the judges that read the wire and the broker.
 */
import type { Channel, ConfirmChannel, GetMessage } from "amqplib";
import { QueueObserver, describeValue } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { Order, OrderKind, PriorityConsumer, PriorityQueueSubmission } from "../../../src/contracts/priority-queue.ts";
import { ConsumerWire, Seq, type Delivery, type Settlement } from "./consumer-wire.ts";

export type T = CheckContext<PriorityQueueSubmission>;

export const PRIORITY: Record<OrderKind, number> = { urgent: 10, normal: 5, bulk: 1 };

/** The priority rule of the contract, computed here independently of the learner's code. */
export function expectedPriority(p: number): number {
  if (Number.isNaN(p)) return 0;
  return Math.min(10, Math.max(0, Math.round(p)));
}

/** How long a learner call may take before the check says so (generous: a loaded box). */
export const CALL_MS = 5000;

export interface World {
  host: Host;
  /** The learner's channel: built in the host, on a connection through `proxy`. */
  ch: Channel;
  proxy: ChaosProxy;
  wire: ConsumerWire;
  seq: Seq;
  /** The grader's own view of the broker, on its own connection. */
  obs: QueueObserver;
  gch: ConfirmChannel;
  queue: string;
}

/** The learner's host, a channel for it through a fresh proxy, and the grader's own connection. */
export async function arrange(t: T, opts: { declare?: false | { deadLetterTo?: string } } = {}): Promise<World> {
  const queue = queueName(t, "orders");
  const learnerSide = Promise.all([t.proxy(), t.learnerHost()]).then(async ([proxy, host]) => {
    const seq = new Seq();
    const wire = new ConsumerWire(proxy, seq);
    const ch = await host.cap<Channel>("amqp.channel", { url: proxy.urlFor(t.amqpUrl) });
    return { proxy, host, seq, wire, ch };
  });
  const graderSide = t.rabbit.connect().then(async (gconn) => {
    const gch = await gconn.createConfirmChannel();
    gch.on("error", () => {});
    if (opts.declare) await declareReference(gch, queue, opts.declare.deadLetterTo);
    return { obs: new QueueObserver(gconn), gch };
  });
  const [l, g] = await Promise.all([learnerSide, graderSide]);
  return { ...l, ...g, queue };
}

/**
 * A queue name unique to this check. With a vhost of its own for the grading (the usual case),
 * the vhost's deletion at the end removes every queue, so the name is not registered for the
 * per-check cleanup (which opens a connection of its own: ~50 ms a check); without one, it is.
 */
export function queueName(t: T, base: string): string {
  const vhost = decodeURIComponent(new URL(t.amqpUrl).pathname.slice(1));
  return vhost.startsWith("msglab-") ? `${t.names.prefix}.${base}` : t.names.queue(base);
}

/** The grader's own declaration of the queue, for checks that grade publishing or consuming alone. */
export async function declareReference(gch: ConfirmChannel, queue: string, deadLetterTo?: string): Promise<void> {
  const args: Record<string, unknown> = {};
  if (deadLetterTo) Object.assign(args, { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": deadLetterTo });
  await gch.assertQueue(queue, { durable: true, maxPriority: 10, arguments: args });
}

// ---------------------------------------------------------------- orders

export const CUSTOMERS = ["acme", "Zürich Ärztehaus 🚑", 'O\'Brien "Bulk" Ltd', "globex: east", "初音 trading", "back\\slash & co"];
const SKUS = ["bolt-m4", "nut m4", "gear:12", "belt \"800\"", "valve-3/4", "fuse-10a ⚡"];
export const ID_SEPARATORS = [":", " ", '"', "'", "-"];

/** An order with an id that carries quotes, colons or spaces, and often text outside ASCII. */
export function makeOrder(rng: Rng, kind: OrderKind, n: number, opts: { sep?: string; customer?: string } = {}): Order {
  const tag = Math.floor(rng.next() * 0xffffff).toString(16).padStart(6, "0");
  const sep = opts.sep ?? rng.pick(ID_SEPARATORS);
  const lines = Array.from({ length: rng.int(1, 3) }, () => ({ sku: rng.pick(SKUS), qty: rng.int(1, 500) }));
  return { id: `${kind}${sep}${n}${sep}${tag}`, kind, customer: opts.customer ?? rng.pick(CUSTOMERS), lines };
}

export function letter(kind: unknown): string {
  return kind === "urgent" ? "U" : kind === "normal" ? "N" : kind === "bulk" ? "B" : "?";
}

/** The order id in a body, or null when the body is not JSON with an id. */
export function idOf(body: Buffer): string | null {
  try {
    const v = JSON.parse(body.toString("utf8")) as { id?: unknown } | null;
    return v && typeof v === "object" && "id" in v ? String(v.id) : null;
  } catch {
    return null;
  }
}

export function showBody(body: Buffer): string {
  return describeValue(body.toString("utf8"), 80);
}

/** Publishes on the grader's own confirm channel and waits until the broker has every message. */
export async function graderPublish(gch: ConfirmChannel, queue: string, items: { body: Order | Buffer; priority: number }[]): Promise<void> {
  for (const { body, priority } of items) {
    const content = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    gch.sendToQueue(queue, content, { persistent: true, priority, contentType: "application/json" });
  }
  await gch.waitForConfirms();
}

// ---------------------------------------------------------------- calls into the learner

function isCheckFailure(e: unknown): boolean {
  return (e as Error)?.name === "CheckFailure";
}

export async function callPublish(t: T, w: World, order: Order, priority: number): Promise<void> {
  try {
    await t.within(`publishOrder(…, ${priority})`, CALL_MS, t.learner.publishOrder(w.ch, w.queue, order, priority));
  } catch (e) {
    if (isCheckFailure(e)) throw e;
    const why = Number.isNaN(priority)
      ? " A priority that is not a number is published at 0, not rejected: amqplib itself throws on NaN."
      : !Number.isFinite(priority)
        ? ` ${priority} is out of range like any other: clamp it (to ${priority > 0 ? 10 : 0}), do not reject it.`
        : priority < 0 || priority > 10 || !Number.isInteger(priority)
          ? " An out-of-range or fractional priority must be rounded and clamped, not rejected: amqplib itself throws on a negative one and on one above 255."
          : "";
    t.fail(`publishOrder(ch, queue, order, ${priority}) threw: ${describeValue((e as Error)?.message ?? e)}.${why}`);
  }
}

export async function startConsumer(t: T, w: World, handler: Handler): Promise<PriorityConsumer> {
  let consumer: PriorityConsumer;
  try {
    consumer = await t.within("consumeOrders()", CALL_MS, t.learner.consumeOrders(w.ch, w.queue, handler.fn));
  } catch (e) {
    if (isCheckFailure(e)) throw e;
    t.fail(`consumeOrders() threw: ${describeValue((e as Error)?.message ?? e)}.`);
  }
  if (!consumer || typeof consumer.stop !== "function") {
    t.fail(`consumeOrders() resolved to ${describeValue(consumer)}; it must resolve to an object with a stop() method.`);
  }
  return consumer;
}

/**
 * The learner's host serves the whole grading (shareLearnerHost), so a check that passed leaves
 * no handler call running in it: stop() once the verdict is in. This is housekeeping, not a
 * verdict (stop() has a check of its own): if stop() does not resolve, the host is killed
 * instead, and the next check gets a fresh one.
 */
export async function leaveClean(t: T, w: World, consumer: PriorityConsumer): Promise<void> {
  const stopped = await t.within("stop()", 2000, consumer.stop()).then(
    () => true,
    () => false,
  );
  if (!stopped) await w.host.kill();
}

// ---------------------------------------------------------------- observing the broker

/** t.waitFor with a message built when the wait gives up, so it reports what was observed then. */
export async function waitUntil(t: T, condition: () => boolean | Promise<boolean>, timeoutMs: number, message: () => string, intervalMs = 5): Promise<void> {
  await t.waitFor(condition, { timeoutMs, message, intervalMs });
}

export async function waitQueued(t: T, w: World, n: number, what: string, queue = w.queue): Promise<void> {
  let last = -1;
  await waitUntil(
    t,
    async () => {
      last = (await w.obs.count(queue))?.messageCount ?? -1;
      return last >= n;
    },
    3000,
    () =>
      `${what}: the grader expected ${n} messages in queue "${queue}" but ${last < 0 ? "the queue does not exist" : `it holds ${last}`}. ` +
      `Publish through the default exchange with the queue's name as the routing key (sendToQueue).`,
    5,
  );
}

/** Reads every ready message with the grader's own basic.get (auto-ack), in queue order. */
export async function drainAll(w: World, queue = w.queue): Promise<GetMessage[]> {
  const ch = await w.obs.throwaway();
  const out: GetMessage[] = [];
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (m === false) break;
    out.push(m);
  }
  await ch.close().catch(() => {});
  return out;
}

/** A few turns here, then in the host, then here: what either side does "right after" has happened. */
export async function ticks(host: Host): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  if (host.alive) await host.turns();
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * SIGKILLs the learner's host (the service dies) and waits until the broker has noticed: once
 * the queue has no consumer, every delivery the dead consumer had not acked is back in it.
 */
export async function killAndWaitRequeue(t: T, w: World): Promise<void> {
  await w.host.kill();
  await waitUntil(
    t,
    async () => (await w.obs.count(w.queue))?.consumerCount === 0,
    3000,
    () => `The grader SIGKILLed the consumer's process, but after 3 s queue "${w.queue}" still has a consumer. Consume only on the channel you are given.`,
    5,
  );
}

// ---------------------------------------------------------------- the handler

export interface Call {
  /** 1-based, over every call of this handler. */
  n: number;
  order: unknown;
  id: string;
  /** How many calls for this id so far, this one included. */
  nth: number;
  /** The delivery on the learner's channel that carried it (null: none did). */
  delivery: Delivery | null;
  seq: number;
  state: "running" | "done" | "failed";
  endSeq: number;
  /** The grader keeps this call in progress (it never settles). */
  held: boolean;
}

/** What the handler does on a call: a promise the learner awaits, or "hold" (never settles). */
export type Act = (call: Call) => Promise<void> | "hold";

/**
 * The OrderHandler the learner's consumer gets: a callback into the grader (the host gets an
 * async stub). Every call is recorded and matched to the delivery that carried its order, so
 * the wire's acks can be judged against what the handler had finished when they crossed.
 */
export class Handler {
  readonly calls: Call[] = [];
  private readonly callOf = new Map<Delivery, Call>();
  readonly fn: (order: Order) => Promise<void>;

  constructor(
    private readonly w: World,
    act: Act,
  ) {
    this.fn = (order: Order) => {
      const id = String((order as { id?: unknown } | null)?.id);
      const delivery = this.match(id);
      const call: Call = {
        n: this.calls.length + 1,
        order,
        id,
        nth: this.calls.filter((c) => c.id === id).length + 1,
        delivery,
        seq: w.seq.next(),
        state: "running",
        endSeq: 0,
        held: false,
      };
      this.calls.push(call);
      if (delivery) this.callOf.set(delivery, call);
      w.wire.pokeAll();
      const work = act(call);
      if (work === "hold") {
        call.held = true;
        return new Promise<void>(() => {});
      }
      return work.then(
        () => {
          call.state = "done";
          call.endSeq = w.seq.next();
          w.wire.pokeAll();
        },
        (e: unknown) => {
          call.state = "failed";
          call.endSeq = w.seq.next();
          w.wire.pokeAll();
          throw e;
        },
      );
    };
  }

  /** The latest delivery of this id on the wire that no call has claimed yet. */
  private match(id: string): Delivery | null {
    const ds = this.w.wire.deliveries;
    for (let i = ds.length - 1; i >= 0; i--) {
      const d = ds[i]!;
      if (!this.callOf.has(d) && idOf(d.body) === id) return d;
    }
    return null;
  }

  call(d: Delivery): Call | undefined {
    return this.callOf.get(d);
  }

  done(id: string): number {
    return this.calls.filter((c) => c.id === id && c.state === "done").length;
  }

  running(): Call[] {
    return this.calls.filter((c) => c.state === "running");
  }

  /** Calls whose order no delivery on the learner's channel carried: the consumer went around it. */
  unmatched(): Call[] {
    return this.calls.filter((c) => !c.delivery);
  }
}

export function describeSettlement(s: Settlement): string {
  if (s.how === "recover") return "basic.recover";
  const flags = [s.multiple ? "multiple" : "", s.how !== "ack" ? `requeue ${s.requeue}` : ""].filter(Boolean).join(", ");
  return `basic.${s.how} (delivery-tag ${s.tag}${flags ? `, ${flags}` : ""})`;
}

function describeOrderDelivery(d: Delivery): string {
  const id = idOf(d.body);
  return id === null ? `the message ${showBody(d.body)} (delivery-tag ${d.tag})` : `order "${id}" (delivery-tag ${d.tag})`;
}

/**
 * Judges one ack, nack or reject against the handler's record at the moment it crossed the
 * proxy (before the broker got it). Returns what was wrong, in words, or null.
 * - an ack may settle only deliveries whose handler call has resolved;
 * - a valid order may be dropped (nack/reject without requeue) never;
 * - a body that is not JSON (in `poison`) may not be requeued, nor acked (it must be rejected).
 */
export function judgeSettlement(s: Settlement, handler: Handler, poison: Set<string> = new Set()): string | null {
  for (const d of s.covered) {
    const isPoison = poison.has(d.body.toString("utf8"));
    const call = handler.call(d);
    const what = `${describeSettlement(s)}${s.covered.length > 1 ? `, which settled ${s.covered.length} deliveries,` : ""}`;
    if (isPoison) {
      if (s.requeue) return `Your consumer sent ${what} for ${describeOrderDelivery(d)}, which is not JSON. Requeued, it comes straight back and fails again, forever.`;
      if (s.how === "ack") return `Your consumer acked ${describeOrderDelivery(d)}, which is not JSON, as if it had been handled. Reject it (requeue false) so the broker dead-letters it where the queue has a dead-letter exchange.`;
      continue;
    }
    if (s.how === "ack") {
      // Judged as things stood when the frame crossed: every event carries the same sequence.
      if (!call || call.seq > s.seq) return `Your consumer sent ${what} before the handler had been called with ${describeOrderDelivery(d)}: acked before it was handled, it is lost if the service dies now.`;
      if (call.state === "running" || call.endSeq > s.seq) {
        const earlier = s.multiple && d.tag !== s.tag ? ` (a delivery before ${s.tag}: multiple acks every delivery up to the tag)` : "";
        return `Your consumer sent ${what} while the handler was still working on ${describeOrderDelivery(d)}${earlier}. That order is lost if the service dies now.`;
      }
      if (call.state === "failed") return `Your consumer sent ${what} after the handler rejected ${describeOrderDelivery(d)}: a failed order is acked, so it never comes back.`;
    } else if (!s.requeue) {
      return `Your consumer sent ${what} for ${describeOrderDelivery(d)}: without requeue (and with no dead-letter exchange) the broker drops the order.`;
    } else if (call && s.how !== "recover" && (call.state === "running" || call.endSeq > s.seq)) {
      const earlier = s.multiple && d.tag !== s.tag ? ` (a delivery before ${s.tag}: multiple settles every delivery up to the tag)` : "";
      return `Your consumer sent ${what} while the handler was still working on ${describeOrderDelivery(d)}${earlier}. Requeued, that order goes out again while it is being handled: it is handled twice.`;
    }
  }
  return null;
}

/** The first settlement the judge finds wrong, as text. */
export function firstWrongSettlement(w: World, handler: Handler, poison?: Set<string>): string | null {
  for (const s of w.wire.settlements) {
    const wrong = judgeSettlement(s, handler, poison);
    if (wrong) return wrong;
  }
  return null;
}

/** Fails when the handler got orders that no delivery on the given channel carried. */
export function requireOwnChannel(t: T, handler: Handler): void {
  const stray = handler.unmatched();
  if (stray.length) {
    t.fail(
      `The handler was called with ${describeValue(stray[0]!.order)}, but no delivery on the channel the grader gave consumeOrders() carried it. ` +
        `Consume on that channel (the grader watches it), and hand the handler JSON.parse of the body.`,
    );
  }
}

/** A consumer that asked for no-ack: the broker forgets every order as it sends it. */
export function noAckConsumer(w: World): boolean {
  return w.wire.allConsumers().some((c) => c.noAck);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
