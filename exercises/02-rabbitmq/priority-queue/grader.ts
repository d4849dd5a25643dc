import { amqpCode, brokerText, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { Order, OrderKind, PriorityQueueSubmission } from "../../../src/contracts/priority-queue.ts";
import { isCancelOk, isConsumeOk } from "./consumer-wire.ts";
import {
  CALL_MS,
  CUSTOMERS,
  ID_SEPARATORS,
  Handler,
  PRIORITY,
  arrange,
  callPublish,
  drainAll,
  expectedPriority,
  firstWrongSettlement,
  graderPublish,
  idOf,
  killAndWaitRequeue,
  leaveClean,
  letter,
  makeOrder,
  queueName,
  noAckConsumer,
  requireOwnChannel,
  showBody,
  sleep,
  startConsumer,
  ticks,
  waitQueued,
  waitUntil,
  type T,
  type World,
} from "./grader-util.ts";

/**
 * How many bulk orders may be handled after the one during which the urgent order was
 * published, before the urgent one is. Before publishing it the grader waits until the broker
 * has topped the consumer up (every finished order acked on the wire, and as many deliveries
 * outstanding as its basic.qos allows), so a consumer with prefetch p has exactly p - 1 bulk
 * orders ahead of it: prefetch 1 to 3 pass, 4 and more fail, every run. (Without that wait the
 * urgent order sometimes took the slot of an ack still in flight, and prefetch 4 passed on
 * some runs.) No limit, a limit set after consuming, or auto-ack: most of the backlog is ahead.
 */
const MAX_AHEAD = 2;

/**
 * The broker has topped the consumer up: every order the handler finished is settled on the
 * wire, and the client holds as many deliveries as its basic.qos allows (or all there are).
 */
function toppedUp(w: World, handler: Handler, total: number): boolean {
  if (handler.calls.some((c) => c.state !== "running" && c.delivery && !c.delivery.settled && !c.delivery.autoAcked)) return false;
  const delivered = new Set(w.wire.deliveries.map((d) => idOf(d.body))).size;
  return delivered >= total || w.wire.outstanding().length >= w.wire.limit();
}

/**
 * Waits until nothing more will happen while the held calls stay held: every other call has
 * finished and its delivery is settled on the wire, the broker is topped up, and a few turns
 * of the host later the handler has had no new call (a delivery the host had already read
 * would have reached the handler by then).
 */
async function settleDown(t: T, w: World, handler: Handler, total: number, ms: number): Promise<void> {
  const quiet = () =>
    handler.calls.length > 0 &&
    handler.calls.every((c) => c.held || (c.state !== "running" && (!c.delivery || c.delivery.settled || c.delivery.autoAcked))) &&
    toppedUp(w, handler, total);
  const until = Date.now() + ms;
  for (;;) {
    await w.wire
      .until(quiet, Math.max(1, until - Date.now()), () => new Error(""))
      .catch(() => {
        const unacked = handler.calls.filter((c) => c.state === "done" && c.delivery && !c.delivery.settled && !c.delivery.autoAcked);
        if (unacked.length)
          t.fail(
            `With ${total} orders queued, ${unacked.length} order(s) whose handler had finished were still not acked ${ms / 1000} s later (${describeValue(unacked[0]!.id)} first), ` +
              `while ${handler.calls.filter((c) => c.held).length} order(s) the grader held were in progress. Ack each order as soon as its own handler finishes: ` +
              `an ack held back behind an order still in progress keeps its prefetch slot full, and an urgent order waits for the slow one.`,
          );
        t.fail(
          `With ${total} orders queued, the handler was called ${handler.calls.length} times within ${ms / 1000} s ` +
            `(${handler.calls.filter((c) => c.state === "running" && !c.held).length} of those calls still running, ${w.wire.outstanding().length} deliveries unsettled on the wire). ` +
            `Consume with manual acks (noAck: false), after a basic.qos prefetch, and call the handler for each delivery.`,
        );
      });
    const calls = handler.calls.length;
    await ticks(w.host);
    if (handler.calls.length === calls && quiet()) return;
  }
}

export default defineGrader<PriorityQueueSubmission>({
  exports: { declarePriorityQueue: "function", publishOrder: "function", consumeOrders: "function" },
  // One learner host for the grading (a fresh one after a check that fails, or kills it): a host
  // start, with amqplib's first load, is most of a check's time. Each check still gets its own
  // channel, proxy and queue; a check that passes leaves no handler call running in the host.
  // The check that calls stop() comes before any other consumer check, so the consumer object
  // it stops is the first one the host ever returned (see the note on method identity in the
  // port's report: a class's methods are bound to the first instance that crossed).
  shareLearnerHost: true,
  checks: [
    {
      name: "declarePriorityQueue makes a durable classic queue with x-max-priority 10",
      hint: "amqplib's assertQueue has an option that becomes x-max-priority. Keep the queue durable and classic: quorum queues on RabbitMQ 3.x refuse priorities.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t);
        const { queue } = w;
        try {
          await t.within("declarePriorityQueue()", CALL_MS, t.learner.declarePriorityQueue(w.ch, queue));
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          const said = brokerText(e);
          if (/quorum/i.test(said)) {
            t.fail(`declarePriorityQueue() failed: the broker refused the declaration (${said}). Quorum queues on RabbitMQ 3.x have no message priorities; priorities need a classic queue.`);
          }
          t.fail(`declarePriorityQueue() threw: ${said}`);
        }

        // Passive first, from the grader's own connection: a re-declare of a missing queue would create it.
        const passive = await w.obs.throwaway();
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

        // A re-declaration with the expected settings succeeds only if they are equivalent; the
        // broker's 406 names the first argument that differs.
        const probe = await w.obs.throwaway();
        try {
          await probe.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-max-priority": 10, "x-queue-type": "classic" } });
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
          if (arg === "durable") t.fail(`The queue is not durable (the broker says: ${said}). Persistent orders in a non-durable queue are lost when the broker restarts.`);
          if (arg === "auto_delete") t.fail(`The queue is auto-delete (the broker says: ${said}). It would vanish, with its backlog, when the last consumer leaves.`);
          t.fail(`The queue is not declared as asked (the broker says: ${said}). Declare it durable with x-max-priority 10 and no other arguments.`);
        }

        // Declaring again (every service start does) must keep what is already queued.
        const queued = t.rng.int(1, 3);
        await graderPublish(w.gch, queue, Array.from({ length: queued }, (_, i) => ({ body: makeOrder(t.rng, "normal", i), priority: 5 })));
        try {
          await t.within("declarePriorityQueue() (second call)", CALL_MS, t.learner.declarePriorityQueue(w.ch, queue));
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`Calling declarePriorityQueue() a second time for the same queue threw: ${brokerText(e)}. Declaring must be repeatable: every service start does it.`);
        }
        const after = await w.obs.count(queue);
        if (after?.messageCount !== queued) {
          t.fail(`The grader queued ${queued} order(s), then called declarePriorityQueue() again; the queue then held ${after ? after.messageCount : "nothing (it is gone)"}. Re-declaring must not delete or purge the queue.`);
        }
      },
    },
    {
      name: "publishOrder sends the order as persistent JSON with its priority",
      hint: "The body is a Buffer of JSON.stringify(order) in UTF-8; persistence and priority are publish options (message properties), not headers or body fields.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const kinds: OrderKind[] = t.rng.shuffle(["urgent", "normal", "bulk", "urgent", "normal", "bulk"]);
        // Every run: each kind of id separator, and customers with accents, CJK and an emoji
        // (UTF-8 of 2, 3 and 4 bytes); the seed decides which order gets which.
        const seps = t.rng.shuffle([...ID_SEPARATORS, ":"]);
        const customers = t.rng.shuffle([...CUSTOMERS]);
        const items = kinds.map((kind, i) => ({ order: makeOrder(t.rng, kind, i, { sep: seps[i], customer: customers[i] }), priority: PRIORITY[kind] }));
        // Calls cross to the host in order and run there in order; awaiting each would only add round trips.
        await Promise.all(items.map(({ order, priority }) => callPublish(t, w, order, priority)));
        await waitQueued(t, w, items.length, `After ${items.length} calls to publishOrder()`);
        const got = await drainAll(w);
        if (got.length !== items.length) {
          t.fail(`The grader called publishOrder() ${items.length} times and found ${got.length} messages in the queue: each call must publish exactly one message.`);
        }
        const unreadable = got.find((m) => idOf(m.content) === null);
        if (unreadable) {
          t.fail(`A message publishOrder() sent is not JSON with an id when read as UTF-8: ${showBody(unreadable.content)}. The body must be Buffer.from(JSON.stringify(order)) (UTF-8: the orders carry text outside ASCII).`);
        }
        const byId = new Map(got.map((m) => [idOf(m.content), m]));
        for (const { order, priority } of items) {
          const m = byId.get(order.id);
          if (!m) {
            t.fail(`No message in the queue carries order id ${describeValue(order.id)}. The grader read: ${describeValue(got.map((x) => x.content.toString("utf8")))}.`);
          }
          const want = JSON.stringify(order);
          if (!m.content.equals(Buffer.from(want, "utf8"))) {
            t.fail(`The body of order ${describeValue(order.id)} is ${showBody(m.content)}, expected exactly JSON.stringify(order) in UTF-8: ${describeValue(want, 80)}.`);
          }
          if (m.properties.deliveryMode !== 2) {
            t.fail(`Order ${describeValue(order.id)} was published with deliveryMode ${describeValue(m.properties.deliveryMode)}, not 2 (persistent): a broker restart would lose it even in a durable queue.`);
          }
          if (m.properties.priority !== priority) {
            t.fail(`Order ${describeValue(order.id)} was published with priority ${describeValue(m.properties.priority)}, expected ${priority}: the priority is a message property.`);
          }
        }
      },
    },
    {
      name: "priorities are rounded and clamped to 0..10 (99 → 10, -5 → 0, NaN → 0), never errors",
      hint: "Round first (Math.round: 7.6 → 8, 7.5 → 8, 7.4 → 7), then clamp on both sides: Math.min alone leaves -5, which amqplib refuses. amqplib also refuses NaN: publish it at 0.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const n = () => t.rng.int(0, 9);
        // Every kind of value, every run; the seed picks the numbers.
        // Every size of "too big", every run: past 10, past a byte, past 32 bits (code that
        // cuts the number to a byte or an int32 on the way wraps these into the range).
        const given = t.rng.shuffle([
          t.rng.pick([11, 42, 99]),
          255,
          256 + t.rng.int(0, 9),
          1000,
          2 ** 31 + t.rng.int(0, 9),
          2 ** 32 + t.rng.int(0, 9),
          -t.rng.int(1, 100),
          -t.rng.int(1, 49) / 100,
          -t.rng.int(51, 99) / 100,
          n() + t.rng.int(1, 4) / 10,
          n() + t.rng.int(6, 9) / 10,
          n() + 0.5,
          10 + t.rng.int(1, 4) / 10,
          10.5,
          0,
          10,
          t.rng.int(1, 9),
          NaN,
          Infinity,
          -Infinity,
        ]);
        const sent = given.map((p, i) => ({ given: p, expected: expectedPriority(p), order: makeOrder(t.rng, "normal", i) }));
        await Promise.all(sent.map((s) => callPublish(t, w, s.order, s.given)));
        await waitQueued(t, w, sent.length, `After ${sent.length} calls to publishOrder()`);
        const got = await drainAll(w);
        if (got.length !== sent.length) t.fail(`The grader called publishOrder() ${sent.length} times and found ${got.length} messages in the queue.`);
        const byId = new Map(got.map((m) => [idOf(m.content), m]));
        const wrong: string[] = [];
        for (const s of sent) {
          const m = byId.get(s.order.id);
          if (!m) t.fail(`No message in the queue carries order id ${describeValue(s.order.id)} (published with priority ${s.given}).`);
          // A message with no priority property has priority 0 as far as the broker is concerned.
          const p = m.properties.priority ?? 0;
          if (p !== s.expected) wrong.push(`${s.given} → ${describeValue(m.properties.priority)} (expected ${s.expected})`);
        }
        if (wrong.length) {
          t.fail(`The grader read these priority properties back from the queue: ${wrong.join("; ")}. Round to the nearest integer (Math.round), then clamp to 0..10; NaN is 0.`);
        }
      },
    },
    {
      name: "consumeOrders() resolves once the consumer is registered, and stop() once it is cancelled",
      hint: "Await ch.consume(...) before consumeOrders() resolves; it gives a consumerTag, and stop() awaits ch.cancel(consumerTag), so each resolves only once the broker has confirmed.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const handler = new Handler(w, () => Promise.resolve());
        // The grader holds the broker's basic.consume-ok: consumeOrders() may resolve only once
        // the consumer is registered. (The queue is empty meanwhile, so no delivery can overtake it.)
        w.proxy.hold("toClient", isConsumeOk);
        let startedSeq = 0;
        const starting = startConsumer(t, w, handler).then((c) => {
          startedSeq = w.seq.next();
          w.wire.pokeAll();
          return c;
        });
        starting.catch(() => w.wire.pokeAll());
        const consumeOkAtProxy = () => w.wire.allConsumers().length > 0;
        let startFailed = false;
        starting.catch(() => void (startFailed = true));
        await w.wire.until(() => startedSeq > 0 || startFailed || consumeOkAtProxy(), 3000, () => new Error("")).catch(() => {});
        await ticks(w.host);
        if (startedSeq > 0) {
          w.proxy.release();
          t.fail(`consumeOrders() resolved while the broker's basic.consume-ok was still held by the grader: it did not wait for the consumer to be registered. Await ch.consume(...) before resolving.`);
        }
        w.proxy.release();
        const consumer = await starting;
        const before = await w.obs.count(w.queue);
        if (before?.consumerCount !== 1) {
          t.fail(`After consumeOrders() resolved, queue "${w.queue}" has ${before?.consumerCount ?? 0} consumers, expected 1: consume once, on the channel you are given.`);
        }
        const warmup = Array.from({ length: t.rng.int(1, 3) }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(w.gch, w.queue, warmup.map((body) => ({ body, priority: 5 })));
        await w.wire.until(() => warmup.every((o) => handler.done(o.id) >= 1) && w.wire.outstanding().length === 0, 3000, () => new Error("")).catch(() =>
          t.fail(`With ${warmup.length} order(s) queued, the handler finished ${handler.calls.filter((c) => c.state === "done").length} and the wire showed ${w.wire.outstanding().length} unacked within 3 s.`),
        );

        // The grader holds the broker's basic.cancel-ok: stop() may resolve only once the cancel is confirmed.
        w.proxy.hold("toClient", isCancelOk);
        let stopSeq = 0;
        let stopError: unknown = null;
        const stopping = consumer.stop().then(
          () => void (stopSeq = w.seq.next()),
          (e: unknown) => void ((stopError = e), (stopSeq = w.seq.next())),
        );
        void stopping.then(() => w.wire.pokeAll());
        const cancelOkAtProxy = () => w.wire.cancelConfirmed.some((c) => c.via === "cancel-ok");
        await w.wire.until(() => stopSeq > 0 || cancelOkAtProxy(), 3000, () => new Error("")).catch(() => {
          w.proxy.release();
          t.fail(`Within 3 s of calling stop(), your code neither sent basic.cancel nor resolved.`);
        });
        await ticks(w.host);
        if (stopSeq > 0 && !stopError) {
          // While the hold is on, only a channel or connection close-ok can have told the client.
          const confirmed = w.wire.cancelConfirmed.some((c) => c.via === "close-ok" && c.seq < stopSeq);
          if (!confirmed) {
            w.proxy.release();
            if (w.wire.cancelsSent.length === 0) {
              const now = await w.obs.count(w.queue);
              t.fail(`stop() resolved, but no basic.cancel (nor a channel close) crossed your channel; the queue still has ${now?.consumerCount ?? 0} consumer(s): the broker would keep delivering to a service that is shutting down.`);
            }
            t.fail(`stop() resolved while the broker's basic.cancel-ok was still held by the grader: it did not wait for the cancel to be confirmed. Until then the broker may still deliver; await ch.cancel(consumerTag).`);
          }
        }
        w.proxy.release();
        await t.within("stop()", CALL_MS, stopping);
        if (stopError) t.fail(`stop() rejected: ${describeValue((stopError as Error)?.message ?? stopError)}.`);
        const after = await w.obs.count(w.queue);
        if (after?.consumerCount !== 0) {
          t.fail(`After stop() resolved, the queue still has ${after?.consumerCount} consumer(s): the broker would keep delivering to a service that is shutting down.`);
        }
        // Nothing reaches the handler once stopped.
        const late = Array.from({ length: 2 }, (_, i) => makeOrder(t.rng, "urgent", 50 + i));
        const calls = handler.calls.length;
        await graderPublish(w.gch, w.queue, late.map((body) => ({ body, priority: 10 })));
        await ticks(w.host);
        const ready = (await w.obs.count(w.queue))?.messageCount ?? 0;
        if (handler.calls.length !== calls || ready !== late.length) {
          t.fail(`After stop() resolved the grader queued ${late.length} orders; the handler was then called ${handler.calls.length - calls} more time(s) and ${ready} stayed queued. A stopped consumer takes nothing.`);
        }
      },
    },
    {
      name: "a backlog is handled urgent first, then normal, then bulk",
      hint: "The order comes from the broker: x-max-priority on the queue and the priority property on each message. Consume with manual acks.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t);
        await t.within("declarePriorityQueue()", CALL_MS, t.learner.declarePriorityQueue(w.ch, w.queue));
        const kinds: OrderKind[] = (["urgent", "normal", "bulk"] as const).flatMap((k) => Array<OrderKind>(6).fill(k));
        let mix = t.rng.shuffle(kinds);
        // A shuffle that is already in priority order would prove nothing.
        while (mix.every((k, i) => i === 0 || PRIORITY[mix[i - 1]!] >= PRIORITY[k])) mix = t.rng.shuffle(kinds);
        const orders = mix.map((k, i) => makeOrder(t.rng, k, i));
        const byId = new Map(orders.map((o) => [o.id, o]));
        await Promise.all(orders.map((o) => callPublish(t, w, o, PRIORITY[o.kind])));
        await waitQueued(t, w, orders.length, `After ${orders.length} calls to publishOrder() with no consumer running`);

        const handler = new Handler(w, () => Promise.resolve());
        await startConsumer(t, w, handler);
        await waitUntil(t, () => handler.calls.length >= orders.length, 5000, () => `With ${orders.length} orders queued, the handler was called ${handler.calls.length} times within 5 s.`);

        requireOwnChannel(t, handler);
        const seen = new Set<string>();
        for (const { order: o } of handler.calls) {
          const sentOrder = byId.get(String((o as Order | null)?.id));
          if (!sentOrder) t.fail(`The handler got ${describeValue(o)}, which is not one of the orders published.`);
          if (JSON.stringify(o) !== JSON.stringify(sentOrder)) t.fail(`The handler got ${describeValue(o)} for order ${describeValue(sentOrder.id)}, expected ${describeValue(sentOrder)}: pass JSON.parse of the body.`);
          if (seen.has(sentOrder.id)) t.fail(`Order ${describeValue(sentOrder.id)} reached the handler twice although every handler call succeeded.`);
          seen.add(sentOrder.id);
        }
        const handled = handler.calls.map((c) => c.order as Order);
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
        const w = await arrange(t, { declare: {} });
        const backlog = Array.from({ length: 40 }, (_, i) => makeOrder(t.rng, "bulk", i));
        await graderPublish(w.gch, w.queue, backlog.map((body) => ({ body, priority: 1 })));
        const urgent = makeOrder(t.rng, "urgent", 99);
        const trigger = t.rng.int(6, 12);

        // The handler is one worker: it works on one order at a time, in the order the consumer
        // hands them over, however many it is handed at once. When it starts on the trigger-th
        // order, it waits until the broker has topped the consumer up, then publishes the urgent
        // order and waits for the broker's confirm, all before that order can be acked. Ahead of
        // the urgent order are then exactly the deliveries the client already holds: prefetch - 1.
        const started: string[] = [];
        let worker: Promise<void> = Promise.resolve();
        let publishError: unknown;
        let limitThen = 0;
        const handler = new Handler(w, (call) => {
          const turn = worker.then(async () => {
            started.push(call.id);
            if (started.length === trigger) {
              try {
                await w.wire.until(() => toppedUp(w, handler, backlog.length), 2000, () => new Error("not topped up")).catch(() => {});
                limitThen = w.wire.limit();
                await graderPublish(w.gch, w.queue, [{ body: urgent, priority: 10 }]);
              } catch (e) {
                publishError = e;
              }
            }
            await sleep(t.rng.int(0, 1));
          });
          worker = turn.catch(() => {});
          return turn;
        });
        const consumer = await startConsumer(t, w, handler);
        await waitUntil(
          t,
          () => started.includes(urgent.id) || started.length >= backlog.length + 1 || publishError !== undefined,
          8000,
          () => `With ${backlog.length} bulk orders queued and an urgent one added while the handler worked on bulk order ${trigger}, the handler started ${started.length} orders within 8 s (expected ${backlog.length + 1}).`,
        );
        if (publishError) throw publishError;
        requireOwnChannel(t, handler);

        const at = started.indexOf(urgent.id) + 1;
        if (at === 0) t.fail(`The urgent order was published while the handler worked on bulk order ${trigger} of ${backlog.length}, and it never reached the handler.`);
        const ahead = at - trigger - 1;
        if (ahead < 0 || ahead > MAX_AHEAD) {
          const limit = Number.isFinite(limitThen) ? `a prefetch of ${limitThen}` : noAckConsumer(w) ? "noAck: true" : "no prefetch limit in force for the consumer";
          t.fail(
            `The urgent order was published while the handler worked on bulk order ${trigger} of ${backlog.length}, and it was handled as number ${at}: ${Math.max(0, ahead)} more bulk orders went first (at most ${MAX_AHEAD} allowed). ` +
              `Those had already left the broker for your client (the grader saw ${limit} on your channel), where priorities no longer apply.`,
          );
        }
        // Bulk orders are still flowing: stop them, so nothing of this check runs on in the shared host.
        await leaveClean(t, w, consumer);
      },
    },
    {
      name: "an order whose handler fails comes back and is handled again",
      hint: "If `await handle(order)` rejects, nack with requeue, every time: not once, not a few times, and never ack or drop it.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const orders = Array.from({ length: t.rng.int(6, 8) }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(w.gch, w.queue, orders.map((body) => ({ body, priority: 5 })));
        // Four orders fail: one once, one twice, one three times and one 8 to 12 times (past
        // any retry limit a learner might pick). The seed picks which, and the last count.
        const [once, twice, thrice, often] = t.rng.shuffle(orders);
        const failures = new Map([once!, twice!, thrice!, often!].map((o, i) => [o.id, i < 3 ? i + 1 : t.rng.int(8, 12)]));
        const handler = new Handler(w, async (call) => {
          await sleep(t.rng.int(0, 2));
          const f = failures.get(call.id) ?? 0;
          if (call.nth <= f) throw new Error(`grader: simulated failure ${call.nth} of ${f} while handling ${call.id}`);
        });
        const plan = [...failures].map(([id, f]) => `${describeValue(id)} ${f === 1 ? "once" : f === 2 ? "twice" : `${f} times`}`).join(", ");
        await startConsumer(t, w, handler);
        let wrong: string | null = null;
        await waitUntil(
          t,
          () => orders.every((o) => handler.done(o.id) >= 1) || (wrong = firstWrongSettlement(w, handler)) !== null || w.host.escaped.length > 0,
          4000,
          () => {
            const missing = orders.filter((o) => handler.done(o.id) === 0);
            const calls = missing.map((o) => `${describeValue(o.id)}: ${handler.calls.filter((c) => c.id === o.id).length} call(s)`).join(", ");
            return `The handler failed ${plan}. Within 4 s, ${orders.length - missing.length} of ${orders.length} orders were handled successfully; never: ${calls}. A failed order must be put back (nack with requeue) every time it fails.`;
          },
        );
        requireOwnChannel(t, handler);
        if (wrong) t.fail(`The handler failed ${plan}. ${wrong}`);
        for (const o of orders) {
          const calls = handler.calls.filter((c) => c.id === o.id).length;
          const want = (failures.get(o.id) ?? 0) + 1;
          if (calls !== want) t.fail(`The handler failed ${plan}. Order ${describeValue(o.id)} reached the handler ${calls} times, expected ${want}: each failure brings it back once, and a success ends it.`);
        }
      },
    },
    {
      name: "a body that is not JSON is rejected without requeue, and the orders around it are handled",
      hint: "JSON.parse throws on such a body: catch it, never call the handler with it, and reject it without requeue (ch.reject(msg, false) or ch.nack(msg, false, false)): retrying cannot fix it.",
      timeoutMs: 10000,
      async run(t: T) {
        const dlq = queueName(t, "dead-letters");
        const w = await arrange(t, { declare: { deadLetterTo: dlq } });
        await w.gch.assertQueue(dlq, { durable: true });
        const orders = Array.from({ length: t.rng.int(4, 6) }, (_, i) => makeOrder(t.rng, "normal", i));
        // Every run: text, cut-off JSON and an empty body. The seed picks the words and where they go.
        const poison = [
          t.rng.pick(["order 7 for acme, 3 bolts", "undefined", "<order id=\"4\"/>", "NaN"]),
          t.rng.pick(['{"id": "cut-', '{"id":"x",', "[1, 2", '{id: "no-quotes"}']),
          "",
        ];
        const mix = t.rng.shuffle([...orders.map((o) => ({ body: o as Order | Buffer, priority: 5 })), ...poison.map((p) => ({ body: Buffer.from(p, "utf8"), priority: 5 }))]);
        await graderPublish(w.gch, w.queue, mix);
        const handler = new Handler(w, () => Promise.resolve());
        const ids = new Set(orders.map((o) => o.id));
        const poisonSet = new Set(poison);
        let wrong: string | null = null;
        let dead = 0;
        await startConsumer(t, w, handler);
        const ctx = `The queue held ${orders.length} orders and ${poison.length} bodies that are not JSON (${poison.map((p) => describeValue(p)).join(", ")}).`;
        await waitUntil(
          t,
          async () => {
            if ((wrong = firstWrongSettlement(w, handler, poisonSet)) !== null || w.host.escaped.length > 0) return true;
            if (handler.calls.some((c) => !ids.has(c.id))) return true;
            if (!orders.every((o) => handler.done(o.id) >= 1)) return false;
            dead = (await w.obs.count(dlq))?.messageCount ?? 0;
            return dead >= poison.length;
          },
          4000,
          () =>
            `${ctx} Within 4 s, the handler finished ${orders.filter((o) => handler.done(o.id) >= 1).length} of the orders and ${dead} bodies reached the queue's dead-letter exchange ` +
            `(expected all ${orders.length}, and ${poison.length}). A body that cannot be parsed must be rejected without requeue, and consuming must go on.`,
        );
        if (w.host.escaped.length) {
          t.fail(`${ctx} An error escaped your consumer: ${describeValue((w.host.escaped[0] as Error)?.message ?? w.host.escaped[0])}. Parse inside a try, and reject what does not parse.`);
        }
        const stray = handler.calls.find((c) => !ids.has(c.id));
        if (stray) t.fail(`${ctx} The handler was called with ${describeValue(stray.order)}; it must get only parsed orders, never a body that is not JSON.`);
        if (wrong) t.fail(`${ctx} ${wrong}`);
        requireOwnChannel(t, handler);
        const deadBodies = (await drainAll(w, dlq)).map((m) => m.content.toString("utf8")).sort();
        if (JSON.stringify(deadBodies) !== JSON.stringify([...poison].sort())) {
          t.fail(`${ctx} The dead-letter queue then held ${describeValue(deadBodies)}: each such body must be rejected exactly once.`);
        }
      },
    },
    {
      name: "an order is acked only after the handler finishes",
      hint: "Ack inside your message callback after `await handle(order)`, never before it and never with noAck: true.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const orders = Array.from({ length: t.rng.int(4, 6) }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(w.gch, w.queue, orders.map((body) => ({ body, priority: 5 })));
        // The handler never finishes: the service is still working when it dies.
        const handler = new Handler(w, () => "hold");
        await startConsumer(t, w, handler);
        await settleDown(t, w, handler, orders.length, 3000);
        requireOwnChannel(t, handler);
        const first = handler.calls[0]!.id;
        if (noAckConsumer(w)) t.fail(`Your consumer subscribed with noAck: true: the broker forgets each order the moment it sends it, so the orders the handler was still working on (${describeValue(first)} first) are lost when the service dies.`);
        const wrong = firstWrongSettlement(w, handler);
        if (wrong) t.fail(`Every handler call was still running. ${wrong}`);

        await killAndWaitRequeue(t, w);
        const back = new Set((await drainAll(w)).map((m) => idOf(m.content)));
        const lost = orders.filter((o) => !back.has(o.id));
        if (lost.length) {
          t.fail(
            `The grader SIGKILLed the consumer's process while the handler was still working on ${describeValue(first)} (handler calls: ${handler.calls.length}, none finished). ` +
              `Of the ${orders.length} orders, ${orders.length - lost.length} came back to the queue; ${lost.map((o) => describeValue(o.id)).join(", ")} did not: acked before their handler finished, they are lost.`,
          );
        }
      },
    },
    {
      name: "an order still in progress is not acked when a later one finishes",
      hint: "With a prefetch above 1 and handlers running side by side, orders finish out of order. ack(msg, true) acks every earlier delivery too, finished or not, and nack(msg, true, true) requeues them: settle each message on its own.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, { declare: {} });
        const orders = Array.from({ length: t.rng.int(6, 9) }, (_, i) => makeOrder(t.rng, "normal", i));
        await graderPublish(w.gch, w.queue, orders.map((body) => ({ body, priority: 5 })));
        // The k-th order handed over stays in progress; every other one finishes after a moment,
        // except one handed over after it, which fails once (and is handled when it comes back):
        // a nack with multiple would requeue the order in progress too. (With prefetch 1 no order
        // comes after the held one, and nothing fails.)
        const k = t.rng.int(1, 2);
        const failN = k + t.rng.int(1, 2);
        const handler = new Handler(w, (call) =>
          call.n === k ? "hold" : call.n === failN ? sleep(t.rng.int(0, 3)).then(() => Promise.reject(new Error(`grader: simulated failure while handling ${call.id}`))) : sleep(t.rng.int(0, 3)),
        );
        await startConsumer(t, w, handler);
        await settleDown(t, w, handler, orders.length, 4000);
        if (handler.calls.length < k) t.fail(`With ${orders.length} orders queued, the handler was called ${handler.calls.length} time(s); the grader needs ${k}.`);
        requireOwnChannel(t, handler);
        const held = handler.calls[k - 1]!;
        const finished = handler.calls.filter((c) => c.state === "done");
        const failed = handler.calls.find((c) => c.state === "failed");
        const ctx = `The handler kept order ${describeValue(held.id)} (the ${k === 1 ? "first" : "second"} it got) in progress while ${finished.length} other call(s) finished${failed ? ` and one, for ${describeValue(failed.id)} (call ${failed.n}), failed` : ""}.`;
        const wrong = firstWrongSettlement(w, handler);
        if (wrong) t.fail(`${ctx} ${wrong}`);

        await killAndWaitRequeue(t, w);
        const back = new Set((await drainAll(w)).map((m) => idOf(m.content)));
        const lost = handler.calls.filter((c) => c.state !== "done" && handler.done(c.id) === 0 && !back.has(c.id));
        if (lost.length) {
          t.fail(
            `${ctx} Then the grader SIGKILLed the consumer's process; ${lost.map((c) => describeValue(c.id)).join(", ")} did not come back to the queue although ` +
              `${lost.length === 1 ? "its handler" : "their handlers"} never finished: acked or dropped when another order was settled.`,
          );
        }
      },
    },
  ],
});
