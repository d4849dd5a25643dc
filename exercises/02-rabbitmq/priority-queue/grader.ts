import { isDeepStrictEqual } from "node:util";
import type { Channel, ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { QueueObserver as Observer, amqpCode, brokerText, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Rng } from "../../../src/kit/index.ts";
import type { Order, OrderKind, PriorityConsumer, PriorityQueueSubmission } from "../../../src/contracts/priority-queue.ts";

type T = CheckContext<PriorityQueueSubmission>;

const PRIORITY: Record<OrderKind, number> = { urgent: 10, normal: 5, bulk: 1 };

/**
 * How many bulk orders may be handled after the one during which the urgent order was
 * published, before the urgent one is. With prefetch p at most p-1 can: they had already been
 * delivered to the client. Measured on RabbitMQ 3.10.8 with a one-at-a-time handler:
 * prefetch 1 → 0, 2 → 1, 3 → 2, 4 → 2 or 3, 10 → 7 to 9; no limit, a limit set after consuming,
 * acking before handling, or auto-ack → most of the remaining backlog (20 to 42).
 */
const MAX_AHEAD = 2;

// ---------------------------------------------------------------- grader-side helpers


async function setup(t: T): Promise<{ obs: Observer; gch: ConfirmChannel; lch: Channel }> {
  const gconn = await t.rabbit.connect();
  const obs = new Observer(gconn);
  const gch = await gconn.createConfirmChannel();
  gch.on("error", () => {});
  const lconn = await t.rabbit.connect();
  const lch = await lconn.createChannel();
  // A broker error on the learner's channel also rejects the learner's pending call, which is
  // where the check reports it; without a listener it would crash the grading process.
  lch.on("error", () => {});
  return { obs, gch, lch };
}

/** The grader's own declaration of the queue, for checks that test publishing or consuming alone. */
async function declareReference(gch: ConfirmChannel, queue: string): Promise<void> {
  await gch.assertQueue(queue, { durable: true, maxPriority: 10 });
}

const CUSTOMERS = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
const SKUS = ["bolt-m4", "nut-m4", "gear-12", "belt-800", "valve-3/4", "fuse-10a"];

function makeOrder(rng: Rng, kind: OrderKind, n: number): Order {
  const tag = Math.floor(rng.next() * 0xffffff).toString(16).padStart(6, "0");
  const lines = Array.from({ length: rng.int(1, 3) }, () => ({ sku: rng.pick(SKUS), qty: rng.int(1, 500) }));
  return { id: `${kind}-${n}-${tag}`, kind, customer: rng.pick(CUSTOMERS), lines };
}

/** Publishes on the grader's own confirm channel and waits until the broker has the messages. */
async function graderPublish(gch: ConfirmChannel, queue: string, items: { order: Order; priority: number }[]): Promise<void> {
  for (const { order, priority } of items) {
    gch.sendToQueue(queue, Buffer.from(JSON.stringify(order)), { persistent: true, priority, contentType: "application/json" });
  }
  await gch.waitForConfirms();
}

async function callPublish(t: T, lch: Channel, queue: string, order: Order, priority: number): Promise<void> {
  try {
    await t.within(`publishOrder(…, ${priority})`, 5000, t.submission.publishOrder(lch, queue, order, priority));
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`publishOrder(ch, queue, order, ${priority}) threw: ${describeValue((e as Error)?.message ?? e)}. ${
      priority < 0 || priority > 10 ? "An out-of-range priority must be clamped, not rejected: amqplib itself throws on a negative one." : ""
    }`.trim());
  }
}

async function waitQueued(t: T, obs: Observer, queue: string, n: number, what: string): Promise<void> {
  let last = -1;
  await waitUntil(
    t,
    async () => {
      last = (await obs.count(queue))?.messageCount ?? -1;
      return last >= n;
    },
    3000,
    () =>
      `${what}: the grader expected ${n} messages in queue "${queue}" but ${
        last < 0 ? "the queue does not exist" : `it holds ${last}`
      }. Publish through the default exchange with the queue's name as the routing key (sendToQueue).`,
  );
}

/**
 * Reads every ready message with the grader's own basic.get (auto-ack), keyed by order id;
 * fails when there are more messages than the `expected` orders published.
 */
async function drain(t: T, obs: Observer, queue: string, expected: number): Promise<Map<string, GetMessage>> {
  const ch = await obs.throwaway();
  const out = new Map<string, GetMessage>();
  let read = 0;
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (m === false) break;
    let id = "?";
    try {
      id = String((JSON.parse(m.content.toString("utf8")) as { id?: unknown })?.id);
    } catch {
      t.fail(`A message in the queue is not JSON: ${describeValue(m.content.toString("utf8"))}. The body must be JSON.stringify(order).`);
    }
    out.set(id, m);
    read++;
  }
  await ch.close().catch(() => {});
  if (read !== expected) t.fail(`The grader published ${expected} orders through publishOrder() and found ${read} messages in the queue: each call must publish exactly one message.`);
  return out;
}

async function startConsumer(t: T, lch: Channel, queue: string, handle: (o: Order) => Promise<void>): Promise<PriorityConsumer> {
  const consumer = await t.within("consumeOrders()", 5000, t.submission.consumeOrders(lch, queue, handle));
  if (!consumer || typeof consumer.stop !== "function") {
    t.fail(`consumeOrders() resolved to ${describeValue(consumer)}; it must resolve to an object with a stop() method.`);
  }
  return consumer;
}

function letter(kind: string): string {
  return kind === "urgent" ? "U" : kind === "normal" ? "N" : kind === "bulk" ? "B" : "?";
}

/**
 * t.waitFor with a message built when the wait gives up, so it reports what was observed
 * then (t.waitFor takes its message as a string, evaluated before the wait starts).
 */
async function waitUntil(t: T, condition: () => boolean | Promise<boolean>, timeoutMs: number, message: () => string): Promise<void> {
  try {
    await t.waitFor(condition, { timeoutMs, message: "" });
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") t.fail(message());
    throw e;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- checks

export default defineGrader<PriorityQueueSubmission>({
  exports: { declarePriorityQueue: "function", publishOrder: "function", consumeOrders: "function" },
  checks: [
    {
      name: "declarePriorityQueue makes a durable classic queue with x-max-priority 10",
      hint: "amqplib's assertQueue has an option that becomes x-max-priority. Keep the queue durable and classic: quorum queues on RabbitMQ 3.x refuse priorities.",
      timeoutMs: 10000,
      async run(t: T) {
        const { obs, gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        try {
          await t.within("declarePriorityQueue()", 5000, t.submission.declarePriorityQueue(lch, queue));
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          const said = brokerText(e);
          if (/quorum/i.test(said)) {
            t.fail(`declarePriorityQueue() failed: the broker refused the declaration (${said}). Quorum queues on RabbitMQ 3.x have no message priorities; priorities need a classic queue.`);
          }
          t.fail(`declarePriorityQueue() threw: ${said}`);
        }

        // Passive first: a re-declare of a missing queue would create it.
        const passive = await obs.throwaway();
        try {
          await passive.checkQueue(queue);
          await passive.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) === 404) t.fail(`After declarePriorityQueue(ch, "${queue}") resolved, the broker has no queue of that name.`);
          if (amqpCode(e) === 405) {
            t.fail(`The queue is exclusive (the broker says: ${brokerText(e)}). An exclusive queue belongs to one connection and vanishes with it; a work queue must be shared and outlive its consumers.`);
          }
          throw e;
        }

        // Re-declaring with the expected settings succeeds only if they are equivalent; the
        // broker's 406 names the first argument that differs.
        const probe = await obs.throwaway();
        try {
          await probe.assertQueue(queue, {
            durable: true,
            exclusive: false,
            autoDelete: false,
            arguments: { "x-max-priority": 10, "x-queue-type": "classic" },
          });
          await probe.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) !== 406) throw e;
          const said = brokerText(e);
          const arg = /inequivalent arg '([^']+)'/.exec(said)?.[1];
          if (arg === "x-queue-type") {
            t.fail(`The queue is not a classic queue (the broker says: ${said}). Message priorities are a classic-queue feature; quorum queues on RabbitMQ 3.x reject x-max-priority.`);
          }
          if (arg === "x-max-priority") {
            if (/current is none/.test(said)) {
              t.fail(`The queue was declared without x-max-priority (the broker says: ${said}). Without it the broker ignores message priorities and delivers in plain FIFO order.`);
            }
            t.fail(`The queue's x-max-priority is not 10 (the broker says: ${said}).`);
          }
          if (arg === "durable") {
            t.fail(`The queue is not durable (the broker says: ${said}). Persistent orders in a non-durable queue are lost when the broker restarts.`);
          }
          if (arg === "auto_delete") {
            t.fail(`The queue is auto-delete (the broker says: ${said}). It would vanish, with its backlog, when the last consumer leaves.`);
          }
          t.fail(`The queue is not declared as asked (the broker says: ${said}). Declare it durable with x-max-priority 10 and no other arguments.`);
        }

        // Declaring again (every service start does) must keep what is already queued.
        await graderPublish(gch, queue, [{ order: makeOrder(t.rng, "normal", 1), priority: 5 }]);
        try {
          await t.within("declarePriorityQueue() (second call)", 5000, t.submission.declarePriorityQueue(lch, queue));
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`Calling declarePriorityQueue() a second time for the same queue threw: ${brokerText(e)}. Declaring must be repeatable: every service start does it.`);
        }
        const after = await obs.count(queue);
        if (after?.messageCount !== 1) {
          t.fail(`The grader queued 1 order, then called declarePriorityQueue() again; the queue then held ${after ? after.messageCount : "nothing (it is gone)"}. Re-declaring must not delete or purge the queue.`);
        }
      },
    },
    {
      name: "publishOrder sends the order as persistent JSON with its priority",
      hint: "The body is a Buffer of JSON; persistence and priority are publish options (message properties), not headers or body fields.",
      timeoutMs: 10000,
      async run(t: T) {
        const { obs, gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const items = t.rng.shuffle((["urgent", "normal", "bulk"] as const).map((kind, i) => ({ order: makeOrder(t.rng, kind, i), priority: PRIORITY[kind] })));
        for (const { order, priority } of items) await callPublish(t, lch, queue, order, priority);
        await waitQueued(t, obs, queue, items.length, `After ${items.length} calls to publishOrder()`);
        const got = await drain(t, obs, queue, items.length);
        for (const { order, priority } of items) {
          const m = got.get(order.id);
          if (!m) {
            t.fail(`No message in the queue carries order id "${order.id}". The grader read: ${describeValue([...got.values()].map((x) => x.content.toString("utf8")))}.`);
          }
          const body = JSON.parse(m.content.toString("utf8")) as unknown;
          if (!isDeepStrictEqual(body, order)) {
            t.fail(`The body of order "${order.id}" is ${describeValue(body)}, expected ${describeValue(order)}: the body must be JSON.stringify(order), every field intact.`);
          }
          if (m.properties.deliveryMode !== 2) {
            t.fail(`Order "${order.id}" was published with deliveryMode ${describeValue(m.properties.deliveryMode)}, not 2 (persistent): a broker restart would lose it even in a durable queue.`);
          }
          if (m.properties.priority !== priority) {
            t.fail(`Order "${order.id}" was published with priority ${describeValue(m.properties.priority)}, expected ${priority}: the priority is a message property.`);
          }
        }
      },
    },
    {
      name: "priorities outside 0..10 are clamped (99 → 10, -5 → 0), not errors",
      hint: "Clamp on both sides, not just the top: Math.min alone leaves -5, which amqplib refuses. Round non-integers first (7.6 → 8).",
      timeoutMs: 10000,
      async run(t: T) {
        const { obs, gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const cases = t.rng.shuffle([
          { given: 99, expected: 10 },
          { given: -5, expected: 0 },
          { given: 7.6, expected: 8 },
          { given: 10, expected: 10 },
          { given: 0, expected: 0 },
          { given: 4, expected: 4 },
        ]);
        const sent = cases.map((c, i) => ({ ...c, order: makeOrder(t.rng, "normal", i) }));
        for (const s of sent) await callPublish(t, lch, queue, s.order, s.given);
        await waitQueued(t, obs, queue, sent.length, `After ${sent.length} calls to publishOrder()`);
        const got = await drain(t, obs, queue, sent.length);
        const wrong: string[] = [];
        for (const s of sent) {
          const m = got.get(s.order.id);
          if (!m) t.fail(`No message in the queue carries order id "${s.order.id}" (published with priority ${s.given}).`);
          // A message with no priority property has priority 0 as far as the broker is concerned.
          const p = m.properties.priority ?? 0;
          if (p !== s.expected) wrong.push(`${s.given} → ${describeValue(m.properties.priority)} (expected ${s.expected})`);
        }
        if (wrong.length) {
          t.fail(`The grader read these priority properties back from the queue: ${wrong.join("; ")}. The priority must be rounded to the nearest integer and clamped to 0..10.`);
        }
      },
    },
    {
      name: "a backlog is handled urgent first, then normal, then bulk",
      hint: "The order comes from the broker: x-max-priority on the queue and the priority property on each message. Consume with manual acks.",
      timeoutMs: 15000,
      async run(t: T) {
        const { obs, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await t.within("declarePriorityQueue()", 5000, t.submission.declarePriorityQueue(lch, queue));
        const kinds: OrderKind[] = (["urgent", "normal", "bulk"] as const).flatMap((k) => Array<OrderKind>(6).fill(k));
        let mix = t.rng.shuffle(kinds);
        // A shuffle that is already in priority order would prove nothing.
        while (mix.every((k, i) => i === 0 || PRIORITY[mix[i - 1]!] >= PRIORITY[k])) mix = t.rng.shuffle(kinds);
        const orders = mix.map((k, i) => makeOrder(t.rng, k, i));
        const byId = new Map(orders.map((o) => [o.id, o]));
        for (const o of orders) await callPublish(t, lch, queue, o, PRIORITY[o.kind]);
        await waitQueued(t, obs, queue, orders.length, `After ${orders.length} calls to publishOrder() with no consumer running`);

        const handled: Order[] = [];
        const consumer = await startConsumer(t, lch, queue, async (o) => {
          handled.push(o);
        });
        await waitUntil(t, () => handled.length >= orders.length, 5000, () => `With ${orders.length} orders queued, the handler was called ${handled.length} times within 5 s.`);
        await t.within("stop()", 5000, consumer.stop());

        const seen = new Set<string>();
        for (const o of handled) {
          const sentOrder = byId.get(String(o?.id));
          if (!sentOrder) t.fail(`The handler got ${describeValue(o)}, which is not one of the orders published.`);
          if (!isDeepStrictEqual(o, sentOrder)) t.fail(`The handler got ${describeValue(o)} for order ${sentOrder.id}, expected ${describeValue(sentOrder)}: pass the parsed JSON body.`);
          if (seen.has(sentOrder.id)) t.fail(`Order ${sentOrder.id} reached the handler twice although every handler call succeeded.`);
          seen.add(sentOrder.id);
        }
        const seq = handled.map((o) => letter(o.kind)).join("");
        for (let i = 1; i < handled.length; i++) {
          if (PRIORITY[handled[i]!.kind] > PRIORITY[handled[i - 1]!.kind]) {
            t.fail(`Handled order ${i + 1} (${handled[i]!.kind}) came after a ${handled[i - 1]!.kind} order. Published as ${mix.map(letter).join("")}, handled as ${seq} (U urgent, N normal, B bulk); expected all U, then N, then B.`);
          }
        }
      },
    },
    {
      name: "an urgent order overtakes a backlog that is already flowing",
      hint: "Where do the waiting bulk orders sit: in the broker, where priority applies, or already in your client? Look at prefetch (and when you set it).",
      timeoutMs: 15000,
      async run(t: T) {
        const { gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const backlog = Array.from({ length: 50 }, (_, i) => makeOrder(t.rng, "bulk", i));
        await graderPublish(gch, queue, backlog.map((order) => ({ order, priority: 1 })));
        const urgent = makeOrder(t.rng, "urgent", 99);
        const trigger = t.rng.int(8, 12);

        // The handler is one worker: it works on one order at a time, in the order your
        // consumer hands them over, however many it is handed at once. When it starts on the
        // trigger-th order, it publishes the urgent one and waits for the broker's confirm, so
        // the urgent order is queued before that order can be acked. Ahead of it are only the
        // deliveries the client already took: at most prefetch - 1.
        const started: string[] = [];
        let worker: Promise<void> = Promise.resolve();
        let publishError: unknown;
        const consumer = await startConsumer(t, lch, queue, (o) => {
          const id = String(o?.id);
          const turn = worker.then(async () => {
            started.push(id);
            if (started.length === trigger) {
              try {
                await graderPublish(gch, queue, [{ order: urgent, priority: 10 }]);
              } catch (e) {
                publishError = e;
              }
            }
            await sleep(2);
          });
          worker = turn;
          return turn;
        });
        await waitUntil(
          t,
          () => started.length >= backlog.length + 1 || publishError !== undefined,
          8000,
          () => `With 50 bulk orders queued and an urgent one added while the handler worked on bulk order ${trigger}, the handler started ${started.length} orders within 8 s (expected 51).`,
        );
        if (publishError) throw publishError;
        await t.within("stop()", 5000, consumer.stop());

        const at = started.indexOf(urgent.id) + 1;
        if (at === 0) t.fail(`The urgent order was published while the handler worked on bulk order ${trigger} of 50, and it never reached the handler.`);
        const ahead = at - trigger - 1;
        if (ahead < 0 || ahead > MAX_AHEAD) {
          t.fail(`The urgent order was published while the handler worked on bulk order ${trigger} of 50, and it was handled as number ${at}: ${Math.max(0, ahead)} more bulk orders went first (at most ${MAX_AHEAD} allowed). Those bulk orders had already left the broker for your client, where priorities no longer apply.`);
        }
      },
    },
    {
      name: "an order is acked only after the handler finishes",
      hint: "Ack inside your message callback after `await handle(order)`, never before it and never with noAck: true.",
      timeoutMs: 10000,
      async run(t: T) {
        const { obs, gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const orders = Array.from({ length: 4 }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(gch, queue, orders.map((order) => ({ order, priority: 5 })));

        const calls: string[] = [];
        // The handler never finishes: the service is still working when it dies.
        await startConsumer(t, lch, queue, (o) => {
          calls.push(String(o?.id));
          return new Promise<void>(() => {});
        });
        await waitUntil(t, () => calls.length >= 1, 3000, () => "With 4 orders queued, the handler was never called within 3 s.");
        // The service dies with the handler still running. Closing the learner's channel (not the
        // connection) keeps amqplib's frame order: any ack the learner already sent reaches the
        // broker before the close, so an early ack is seen as one.
        await lch.close();
        let last = -1;
        await waitUntil(
          t,
          async () => {
            last = (await obs.count(queue))?.messageCount ?? -1;
            return last === orders.length;
          },
          2000,
          () =>
            `The consumer's channel closed (the service died) while the handler was still working on order ${calls[0]} (handler calls so far: ${calls.length}). Of the 4 orders, ${Math.max(last, 0)} came back to the queue; the others were acked before their handler finished and are lost.`,
        );
      },
    },
    {
      name: "an order whose handler fails comes back and is handled again",
      hint: "If `await handle(order)` rejects, do not ack (and do not drop it): the order must go back into the queue.",
      timeoutMs: 10000,
      async run(t: T) {
        const { gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const orders = Array.from({ length: 5 }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(gch, queue, orders.map((order) => ({ order, priority: 5 })));
        const failing = t.rng.pick(orders).id;
        const calls: string[] = [];
        const done = new Set<string>();
        const consumer = await startConsumer(t, lch, queue, async (o) => {
          const id = String(o?.id);
          calls.push(id);
          if (id === failing && calls.filter((c) => c === id).length === 1) throw new Error(`grader: simulated failure while handling ${id}`);
          await sleep(1);
          done.add(id);
        });
        await waitUntil(
          t,
          () => done.size === orders.length,
          4000,
          () =>
            `The handler failed once on order ${failing}. Within 4 s, the handler completed ${done.size} of 5 orders and was called ${calls.filter((c) => c === failing).length} time(s) for ${failing}: a failed order must be put back (nack with requeue), not acked or dropped.`,
        );
        await t.within("stop()", 5000, consumer.stop());
      },
    },
    {
      name: "stop() cancels the consumer",
      hint: "ch.consume() resolves to a consumerTag; the broker cancels a consumer by its tag.",
      timeoutMs: 10000,
      async run(t: T) {
        const { obs, gch, lch } = await setup(t);
        const queue = t.names.queue("orders");
        await declareReference(gch, queue);
        const consumer = await startConsumer(t, lch, queue, async () => {});
        const before = await obs.count(queue);
        if (before?.consumerCount !== 1) {
          t.fail(`After consumeOrders() resolved, queue "${queue}" has ${before?.consumerCount ?? 0} consumers, expected 1: resolve only once ch.consume() has resolved.`);
        }
        await t.within("stop()", 5000, consumer.stop());
        let n = -1;
        await waitUntil(
          t,
          async () => {
            n = (await obs.count(queue))?.consumerCount ?? 0;
            return n === 0;
          },
          1000,
          () => `After stop() resolved, the queue still has ${n} consumer(s): the broker would keep delivering to a service that is shutting down.`,
        );
      },
    },
  ],
});
