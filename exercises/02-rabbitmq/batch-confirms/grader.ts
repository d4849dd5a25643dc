import type { GetMessage } from "amqplib";
import { defineGrader, describeValue, newTimers } from "../../../src/kit/index.ts";
import type { AmqpFrame } from "../../../src/kit/index.ts";
import type { BatchConfirmsSubmission, BatchPublisher, OutgoingMessage } from "../../../src/contracts/batch-confirms.ts";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "../../../src/contracts/batch-confirms.ts";
import {
  BatchCall,
  arrange,
  errText,
  lead,
  learnerConnection,
  listIds,
  makeBatch,
  ms,
  mustRejectWith,
  mustResolve,
  newPublisher,
  probeExchange,
  publishOneByOne,
  randomKey,
  sleep,
  twoKeys,
  type T,
  type World,
} from "./grader-util.ts";

/**
 * How long every confirm of a batch is held at the proxy while the call must stay pending:
 * longer than any "assume it worked after a while" timer a learner might write short of the
 * 30 s default deadline. (A timer of any length is caught by the deadline check, where the
 * learner's own deadline is short.)
 */
const HOLD_MS = 2500;
/** The longest learner timer (shorter than the deadline) the grader holds the confirms past, in check 1. */
const MAX_TIMER_WATCH_MS = 9000;
/** Time the learner's code gets to settle a call once every answer has reached its connection. */
const SETTLE_MS = 2000;
/** Once the connection is cut, a pending call must reject within this, long before its deadline. */
const CUT_MS = 2000;
/** Batch sizes past any chunk size a learner might pick (256, 1000, 2048). */
const BIG_MIN = 2100;
const BIG_MAX = 2600;
/** With every confirm held, no new publish of the batch for this long means the code is waiting for confirms. */
const STALL_MS = 1500;
/** With the first of two concurrent batches answered (the answers held), no publish of the second for this long means it waits its turn. */
const QUEUED_MS = 300;
/**
 * The timing check: the proxy delays every frame by LATENCY_MS (a network between services; on
 * localhost a round trip is a fraction of a millisecond, and waiting per message costs little).
 * The batch must take at most 1/RATIO of the time the grader's own per-message publisher takes
 * for the same number of messages on the same broker and path, in one of ATTEMPTS tries.
 */
const LATENCY_MS = 5;
const TIMING_N = 50;
const RATIO = 5;
const ATTEMPTS = 3;
/** The deadline check: a call must reject at its deadline, not before, at most LATE_MS after. */
const EARLY_TOLERANCE_MS = 5;
const LATE_MS = 500;

const isPublish = (f: AmqpFrame) => f.type === 1 && f.classId === 60 && f.methodId === 40;

/** A gate on the learner's publishes that stops at the k-th publish (1-based) of the next batch on `link`. */
function stopAtPublish(w: World, link: number, k: number) {
  const base = w.ledger.publishesOn(link);
  return w.proxy.stopAt("toBroker", (f) => isPublish(f) && f.link === link && w.ledger.publishesOn(link) === base + k);
}

/** Fails at once if the call settled although some message's confirm had not reached the learner's connection. */
function settledEarly(w: World, call: BatchCall, setting: string): () => string | null {
  return () => {
    if (call.state === "pending") return null;
    const id = w.ledger.firstNotPassed(call.ids);
    if (id === undefined) return null;
    const what = call.state === "resolved" ? "resolved" : `rejected with ${errText(call.error)}`;
    return `${lead(setting, call.label)} ${what} ${ms(call.elapsed)} after the call, while ${w.ledger.fate(id)}. publishBatch() settles only once the broker has answered for every message of the batch (or the channel closed, or the deadline passed).`;
  };
}

export default defineGrader<BatchConfirmsSubmission>({
  exports: { createBatchPublisher: "function" },
  // Checks share nothing and mostly wait on the broker and on held confirms: three at a time.
  concurrency: 3,
  checks: [
    {
      name: "publishBatch holds the call until every confirm arrives, even when they are held for seconds",
      hint: "Publish every message on a confirm channel, then wait until the broker has answered for each one: amqplib calls each publish's callback with its own ack or nack. Never resolve because time passed, or because most answers came in.",
      timeoutMs: 25000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("confirmed");
        await w.obs.queue(t, queue, w.exchange, [key]);
        // Timers already there (amqplib's heartbeats) are not the batches'.
        const timersBefore = await w.host.timers();

        // The steady state: a batch confirmed as usual.
        const steady = new BatchCall("the first batch", makeBatch(t.rng, "warm", t.rng.int(3, 6), () => key), pub, w.pulse);
        await w.pulse.until(() => steady.state !== "pending", 5000, () => `With nothing held back, ${steady.label} of ${steady.ids.length} messages ${steady.outcome}.`);
        mustResolve(t, steady, "With nothing held back,");

        // Every confirm of a batch held for seconds: the call must not settle meanwhile.
        w.wire.hold();
        const n = t.rng.int(20, 40);
        const held = new BatchCall("the second batch", makeBatch(t.rng, "held", n, () => key), pub, w.pulse);
        const setting = `After a batch had been confirmed as usual, the grader held the broker's confirms at the proxy and called publishBatch() with ${n} messages.`;
        await w.pulse.until(
          () => w.ledger.answered(held.ids),
          3000,
          () => `${setting} Within 3 s the broker had not answered for every message: ${w.ledger.fate(held.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`,
          settledEarly(w, held, setting),
        );
        await w.pulse.watch(HOLD_MS, settledEarly(w, held, `${setting} The broker had answered for all of them, and the grader kept the answers for ${ms(HOLD_MS)}.`));
        // A timer your code set for this batch that fires before its deadline (an "assume it
        // worked after a while") is watched out too: the answers stay held until it has fired.
        const short = newTimers(timersBefore, await w.host.timers(), 1000).filter((x) => x.ms < DEFAULT_BATCH_CONFIRM_TIMEOUT_MS - 1000 && x.ms <= MAX_TIMER_WATCH_MS);
        if (short.length) {
          const until = held.startedAt + short[0]!.ms + 300;
          await w.pulse.watch(
            Math.max(0, until - performance.now()),
            settledEarly(w, held, `${setting} The broker had answered for all of them, and the grader kept the answers for ${ms(until - held.startedAt)}, past the ${short[0]!.ms} ms timer your code had set (its deadline is ${DEFAULT_BATCH_CONFIRM_TIMEOUT_MS} ms).`),
          );
        }
        w.wire.release();
        await w.pulse.until(() => held.state !== "pending", SETTLE_MS, () => `${setting} After ${ms(HOLD_MS)} the grader let the broker's answers (all acks) through; ${ms(SETTLE_MS)} later ${held.label} ${held.outcome}.`);
        mustResolve(t, held, `${setting} Once the held acks were let through,`);

        // Only the last message's confirm missing: everything else acked and delivered.
        const m = t.rng.int(8, 16);
        const lastBatch = makeBatch(t.rng, "last", m, () => key);
        const last = lastBatch[m - 1]!.messageId;
        const gate = stopAtPublish(w, 1, m);
        const call = new BatchCall("the third batch", lastBatch, pub, w.pulse);
        const setting2 = `The grader called publishBatch() with ${m} messages; the broker answered for the first ${m - 1} and the answers reached your code, while the grader held back the last message's confirm.`;
        await w.pulse.until(
          () => gate.stoppedAt !== null && w.ledger.answered(call.ids.slice(0, m - 1)),
          3000,
          () => `The grader called publishBatch() with ${m} messages. Within 3 s, ${gate.stoppedAt ? `the broker had not answered for all of the first ${m - 1}: ${w.ledger.fate(call.ids.find((id) => !w.ledger.of(id)?.confirm)!)}` : `only ${w.ledger.crossed(call.ids)} of them had been published`}.`,
          settledEarly(w, call, `The grader called publishBatch() with ${m} messages and held back the last one's publish for a moment.`),
        );
        w.wire.hold((c) => c.covered.some((p) => p.properties?.messageId === last));
        gate.open();
        await w.pulse.until(() => w.ledger.answered([last]), 3000, () => `${setting2} Within 3 s the broker had not answered for the last message: ${w.ledger.fate(last)}.`, settledEarly(w, call, setting2));
        await w.host.turns();
        await w.pulse.watch(300, settledEarly(w, call, setting2));
        w.wire.release();
        await w.pulse.until(() => call.state !== "pending", SETTLE_MS, () => `${setting2} Then the grader let it through; ${ms(SETTLE_MS)} later ${call.label} ${call.outcome}.`);
        mustResolve(t, call, `${setting2} Once it was let through,`);
        // Three batches settled: none leaves its deadline's timer running behind it. The host
        // records the learner's timers, so this is exact, not a wait for a late effect.
        await w.host.turns();
        const left = newTimers(timersBefore, await w.host.timers(), 1000);
        if (left.length) {
          const [first] = left;
          t.fail(
            `Three batches had resolved on their confirms, but your code still had ${left.length === 1 ? `a timer of ${first!.ms} ms` : `${left.length} timers pending (the longest: ${first!.ms} ms)`} pending (${first!.callback || "a callback"}). ` +
              `A batch that settled leaves nothing scheduled: clear its deadline's timer when it settles, or every batch keeps a live timer (and what it holds) for the length of the deadline.`,
          );
        }
      },
    },
    {
      name: "every message of a batch reaches the exchange as sent, and the call resolves with their ids",
      hint: "One publish per message, to the exchange you were given, with the message's own routing key; options { persistent: true, messageId, contentType: \"application/json\" }; body Buffer.from(JSON.stringify(event)). Resolve with { messageIds } in the order given. An empty batch has nothing to wait for.",
      timeoutMs: 12000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const problem = await probeExchange(w.obs, w.exchange);
        if (problem) t.fail(`After createBatchPublisher(conn, "${w.exchange}") resolved, ${problem}`);

        const keys = new Set<string>();
        while (keys.size < 3) keys.add(randomKey(t.rng));
        const [k0, k1, k2] = [...keys] as [string, string, string];
        const all = t.names.queue("all");
        const one = t.names.queue("one-key");
        await Promise.all([w.obs.queue(t, all, w.exchange, ["#"]), w.obs.queue(t, one, w.exchange, [k0])]);

        // An empty batch: nothing to publish, nothing to wait for.
        const before = w.ledger.publishesOn(1);
        const empty = new BatchCall("publishBatch([])", [], pub, w.pulse);
        await w.pulse.until(() => empty.state !== "pending", 3000, () => `publishBatch([]) ${empty.outcome}: an empty batch has no confirm to wait for and resolves at once with { messageIds: [] }.`);
        mustResolve(t, empty, "An empty batch:");
        if (w.ledger.publishesOn(1) !== before) t.fail(`publishBatch([]) published ${w.ledger.publishesOn(1) - before} message(s); an empty batch publishes nothing.`);

        // A batch of one, on a second publisher for the same exchange (a restart re-declares it).
        const pub2 = await newPublisher(t, w.host, w.conn, w.exchange);
        const single = new BatchCall("a batch of one message", makeBatch(t.rng, "solo", 1, () => k1), pub2, w.pulse);
        // A batch with three keys, two messages with the same body, and ids with quotes, colons, spaces.
        const n = t.rng.int(7, 15);
        const order = t.rng.shuffle(Array.from({ length: n }, (_, i) => (i === 0 ? k0 : i === 1 ? k1 : i === 2 ? k2 : t.rng.pick([k0, k1, k2]))));
        const batch = makeBatch(t.rng, "mix", n, (i) => order[i]!);
        const [a, b] = t.rng.shuffle(Array.from({ length: n }, (_, i) => i)) as [number, number];
        batch[b]!.event = structuredClone(batch[a]!.event);
        const call = new BatchCall(`a batch of ${n} messages`, batch, pub, w.pulse);
        await w.pulse.until(() => single.state !== "pending" && call.state !== "pending", 5000, () => `With nothing held back, ${single.state === "pending" ? single.label : call.label} had not settled within 5 s.`);
        mustResolve(t, single, "With nothing held back, on a second publisher for the same exchange,");
        mustResolve(t, call, "With nothing held back,");

        const sent = [...single.messages, ...batch];
        const got = await w.obs.collect(all, sent.length);
        const byId = new Map<string, GetMessage[]>();
        for (const m of got) {
          const id = String(m.properties.messageId);
          byId.set(id, [...(byId.get(id) ?? []), m]);
        }
        for (const s of sent) {
          const ms_ = byId.get(s.messageId) ?? [];
          const what = `The message with messageId ${describeValue(s.messageId)}`;
          if (ms_.length === 0) {
            const ids = got.map((m) => m.properties.messageId);
            t.fail(`Both calls resolved, but a queue bound to the exchange with "#" never received the message with messageId ${describeValue(s.messageId)} (it holds ${got.length} messages, with messageIds ${describeValue(ids, 200)}). Publish each message with its own messageId as the messageId property.`);
          }
          if (ms_.length > 1) t.fail(`${what} arrived ${ms_.length} times; publishBatch() must publish each message once.`);
          const m = ms_[0]!;
          const want = JSON.stringify(s.event);
          if (!m.content.equals(Buffer.from(want, "utf8"))) t.fail(`${what} has body ${describeValue(m.content.toString("utf8"), 120)}; expected exactly JSON.stringify(event) in UTF-8: ${describeValue(want, 120)}.`);
          if (m.fields.routingKey !== s.routingKey) t.fail(`${what} arrived with routing key ${describeValue(m.fields.routingKey)}, but that message's routingKey is "${s.routingKey}": each message of a batch keeps its own key.`);
          if (m.properties.deliveryMode !== 2) t.fail(`${what} has delivery mode ${describeValue(m.properties.deliveryMode)}, expected 2 (persistent): a confirm for a transient message only means it was routed, and a broker restart loses it.`);
          if (typeof m.properties.contentType !== "string" || !/^application\/json\s*(;.*)?$/i.test(m.properties.contentType)) {
            t.fail(`${what} has content type ${describeValue(m.properties.contentType)}, expected "application/json".`);
          }
        }
        if (got.length !== sent.length) t.fail(`The queue bound with "#" received ${got.length} messages for ${sent.length} published.`);
        const onOne = new Set((await w.obs.drain(one)).map((m) => String(m.properties.messageId)));
        const expected = sent.filter((s) => s.routingKey === k0).map((s) => s.messageId);
        if (onOne.size !== expected.length || expected.some((id) => !onOne.has(id))) {
          t.fail(`A queue bound with "${k0}" received ${listIds([...onOne])}; the messages with that routing key are ${listIds(expected)}.`);
        }
      },
    },
    {
      name: "an ack with multiple set settles every message up to its tag",
      hint: "The broker often answers for many messages with one basic.ack whose multiple flag is set: it acks every unconfirmed delivery tag up to the one it names. amqplib's per-publish callbacks already handle it; if you count tags yourself, handle `multiple`.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("multi");
        await w.obs.queue(t, queue, w.exchange, [key]);
        // The broker nearly always acks a burst with some multiple frames; another batch follows when it did not.
        let coalesced = 0;
        for (let round = 1; round <= 6 && coalesced === 0; round++) {
          const n = t.rng.int(60, 120);
          w.wire.hold();
          const call = new BatchCall(`batch ${round}`, makeBatch(t.rng, `multi${round}`, n, () => key), pub, w.pulse);
          const setting = `The grader held the broker's confirms and called publishBatch() with ${n} messages.`;
          await w.pulse.until(() => w.ledger.answered(call.ids), 3000, () => `${setting} Within 3 s the broker had not answered for every message: ${w.ledger.fate(call.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`, settledEarly(w, call, setting));
          const mine = new Set(call.ids);
          const frames = [...new Set(call.ids.map((id) => w.ledger.of(id)!.confirm!))];
          const multi = frames.filter((c) => c.multiple && c.covered.filter((p) => mine.has(String(p.properties?.messageId))).length >= 2);
          coalesced = multi.length;
          w.wire.release();
          const shown = multi.slice(0, 3).map((c) => `basic.ack for delivery tag ${c.tag} with multiple set (${c.covered.length} messages)`).join(", ");
          await w.pulse.until(
            () => call.state !== "pending",
            SETTLE_MS,
            () => `${setting} The broker acked all of them in ${frames.length} frame(s)${shown ? `, among them ${shown}` : ""}; the grader let them through, and ${ms(SETTLE_MS)} later ${call.label} ${call.outcome}. An ack with multiple set confirms every unconfirmed tag up to its own.`,
          );
          mustResolve(t, call, `${setting} Once the acks (${frames.length} frames${shown ? `, among them ${shown}` : ""}) were let through,`);
        }
        if (coalesced === 0) throw new Error("the broker never acked two messages with one frame in six batches; the check could not be made (regrade)");
      },
    },
    {
      name: "a nack anywhere in the batch rejects the call, naming exactly the nacked messages",
      hint: "Wait for the broker's answer to every message of the batch, not only the first nack, and keep which ones were nacked: reject with an Error whose failedIds lists exactly those messageIds, in batch order. The last message is in the batch too.",
      timeoutMs: 20000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const [goodKey, badKey] = twoKeys(t.rng);
        const ok = t.names.queue("ok");
        const full = t.names.queue("full");
        await Promise.all([w.obs.queue(t, ok, w.exchange, [goodKey]), w.obs.fullQueue(t, full, w.exchange, badKey)]);
        // Every run: a nack of the first, of one in the middle, of the last, and of two at once.
        // The seed picks the order, the sizes and where "middle" and "two" fall.
        const modes = t.rng.shuffle(["the first message", "a message in the middle", "the last message", "two neighbouring messages"] as const);
        let done = 0;
        const retried: OutgoingMessage[] = [];
        for (const mode of modes) {
          const n = t.rng.int(6, 14);
          const mid = t.rng.int(1, n - 2);
          const pair = t.rng.int(1, n - 3);
          const bad = new Set(mode === "the first message" ? [0] : mode === "the last message" ? [n - 1] : mode === "a message in the middle" ? [mid] : [pair, pair + 1]);
          const batch = makeBatch(t.rng, `nack${done + 1}`, n, (i) => (bad.has(i) ? badKey : goodKey));
          const mine = new Set(batch.map((m) => m.messageId));
          const nackedIds = batch.filter((_, i) => bad.has(i)).map((m) => m.messageId);
          const where = [...bad].map((i) => `#${i + 1}`).join(" and ");
          const setting = `${done ? `After ${done} earlier batch(es), ` : ""}publishBatch() was called with ${n} messages; ${mode} (${where}) went to a key bound to a full queue that refuses messages (x-overflow reject-publish), so the broker nacked ${bad.size === 1 ? "it" : "them"}, and acked the rest. The grader passed the broker's answers on one frame at a time.`;
          const stepper = w.wire.step((c) => c.covered.some((p) => mine.has(String(p.properties?.messageId))));
          const call = new BatchCall(`the batch`, batch, pub, w.pulse);
          const early = settledEarly(w, call, setting);
          await w.pulse.until(() => w.ledger.answered(call.ids), 3000, () => `${setting} Within 3 s the broker had not answered for every message: ${w.ledger.fate(call.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`, early);
          let frames = 0;
          while (stepper.waiting > 0) {
            stepper.next();
            frames++;
            await w.host.turns();
            await w.pulse.watch(10, early);
          }
          stepper.open();
          await w.pulse.until(() => call.state !== "pending", SETTLE_MS, () => `${setting} All ${frames} frames had reached your connection; ${ms(SETTLE_MS)} later the call ${call.outcome}.`);
          const wronglyNacked = call.ids.filter((id) => w.ledger.of(id)?.confirm?.how === "nack" && !nackedIds.includes(id));
          const wronglyAcked = nackedIds.filter((id) => w.ledger.of(id)?.confirm?.how === "ack");
          if (wronglyNacked.length || wronglyAcked.length) {
            t.fail(`${setting} But the broker ${wronglyNacked.length ? `nacked ${listIds(wronglyNacked)}` : `acked ${listIds(wronglyAcked)}`}: publish each message with its own routing key (messages ${where} had "${badKey}", the others "${goodKey}").`);
          }
          mustRejectWith(t, call, nackedIds, setting);
          batch.forEach((m, i) => bad.has(i) && retried.push({ ...m, routingKey: goodKey }));
          done++;
        }
        // The caller publishes the nacked messages again, with the same messageIds (now to a key
        // with room): the retry settles on the new publishes' confirms (held for a while), not on
        // the old nacks.
        const again = t.rng.shuffle(retried);
        w.ledger.forget(again.map((m) => m.messageId));
        w.wire.hold();
        const retry = new BatchCall("the retry", again, pub, w.pulse);
        const setting = `After ${done} batches that were rejected for nacks, publishBatch() was called with the ${again.length} nacked messages again (the same messageIds, now to a key with room). The grader held the broker's answers (all acks) for a while.`;
        const early = settledEarly(w, retry, setting);
        await w.pulse.until(() => w.ledger.answered(retry.ids), 3000, () => `${setting} Within 3 s the broker had not answered for every message: ${w.ledger.fate(retry.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`, early);
        await w.pulse.watch(300, early);
        w.wire.release();
        await w.pulse.until(() => retry.state !== "pending", SETTLE_MS, () => `${setting} Once the acks were let through, ${retry.label} ${retry.outcome}.`);
        mustResolve(t, retry, `${setting} Once the acks were let through,`);
        // The publisher keeps working after its failed batches.
        const after = new BatchCall("a batch after the failed ones", makeBatch(t.rng, "after", t.rng.int(3, 6), () => goodKey), pub, w.pulse);
        await w.pulse.until(() => after.state !== "pending", 5000, () => `After ${done} batches that were rejected for nacks, ${after.label} ${after.outcome}: a failed batch must not break the publisher.`);
        mustResolve(t, after, `After ${done} batches that were rejected for nacks,`);
      },
    },
    {
      name: "a whole batch is published before any confirm is awaited, past any chunk size",
      hint: "Call publish() for every message of the batch first, and only then wait for the confirms, once. Waiting after each message costs one network round trip per message; waiting after every chunk of 100 or 1000, one per chunk.",
      timeoutMs: 20000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("big");
        await w.obs.queue(t, queue, w.exchange, [key]);
        const n = t.rng.int(BIG_MIN, BIG_MAX);
        // With every confirm held, a batch publisher sends all n; one that waits per message sends
        // one, one that waits per chunk of c sends c, and then nothing more.
        w.wire.hold();
        const call = new BatchCall("the batch", makeBatch(t.rng, "big", n, () => key, true), pub, w.pulse);
        const setting = `The grader held the broker's confirms at the proxy and called publishBatch() with ${n} messages.`;
        const early = settledEarly(w, call, setting);
        let last = -1;
        let lastAt = performance.now();
        for (;;) {
          await w.pulse.until(() => w.ledger.crossed(call.ids) === n, 250, null, early);
          const c = w.ledger.crossed(call.ids);
          if (c === n) break;
          if (c !== last) {
            last = c;
            lastAt = performance.now();
          } else if (performance.now() - lastAt > STALL_MS) {
            const how = c <= 1 ? "after each message" : `after every ${c} messages (a chunk)`;
            t.fail(
              `${setting} ${c} of the ${n} messages reached the broker, then nothing more for ${ms(STALL_MS)}: your code waits for confirms ${how}, so a batch of ${n} costs ${c <= 1 ? n : Math.ceil(n / c)} round trips to the broker instead of one. Publish the whole batch first, then wait once.`,
            );
          }
        }
        await w.pulse.until(() => w.ledger.answered(call.ids), 5000, () => `${setting} All ${n} were published, but within 5 s the broker had not answered for all of them: ${w.ledger.fate(call.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`, early);
        w.wire.release();
        await w.pulse.until(() => call.state !== "pending", SETTLE_MS + 2000, () => `${setting} All ${n} were published and acked, and the grader let the acks through; ${ms(SETTLE_MS + 2000)} later the call ${call.outcome}.`);
        mustResolve(t, call, `${setting} Once the acks were let through,`);
        const queued = await w.obs.count(queue);
        if (queued !== n) t.fail(`${setting} The call resolved, but the grader's queue holds ${queued} messages, not ${n}.`);
      },
    },
    {
      name: "a batch is at least 5× faster than waiting for each confirm",
      hint: "The gain of a batch is that it waits for the network once: publish every message, then wait for all the confirms together.",
      timeoutMs: 20000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("timed");
        await w.obs.queue(t, queue, w.exchange, [key]);
        // The grader's own publisher, on the same broker and through the same proxy: one message
        // at a time, each confirm awaited before the next publish.
        const gconn = await t.rabbit.connect(w.proxy.urlFor(t.amqpUrl));
        const gch = await gconn.createConfirmChannel();
        gch.on("error", () => {});
        w.proxy.latency(LATENCY_MS);
        // One untimed round each first: channels open, code paths warm.
        const warm = new BatchCall("a warm-up batch", makeBatch(t.rng, "warm", 5, () => key), pub, w.pulse);
        await w.pulse.until(() => warm.state !== "pending", 10_000, () => `With ${LATENCY_MS} ms of latency on the proxy, a warm-up batch of 5 ${warm.outcome}.`);
        mustResolve(t, warm, `With ${LATENCY_MS} ms of latency on the proxy and nothing held back,`);
        await publishOneByOne(gch, w.exchange, makeBatch(t.rng, "warmbase", 3, () => key));
        const tries: string[] = [];
        let best = 0;
        for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
          const call = new BatchCall(`batch ${attempt}`, makeBatch(t.rng, `timed${attempt}`, TIMING_N, () => key), pub, w.pulse);
          await w.pulse.until(() => call.state !== "pending", 10_000, () => `With ${LATENCY_MS} ms of latency on the proxy, a batch of ${TIMING_N} ${call.outcome}.`);
          mustResolve(t, call, `With ${LATENCY_MS} ms of latency on the proxy and nothing held back,`);
          const batchMs = call.elapsed;
          const firstAnswer = Math.min(...call.ids.map((id) => w.ledger.of(id)?.confirm?.at ?? Infinity));
          const before = call.ids.filter((id) => (w.ledger.of(id)?.at ?? Infinity) < firstAnswer).length;
          const baselineMs = await publishOneByOne(gch, w.exchange, makeBatch(t.rng, `base${attempt}`, TIMING_N, () => key));
          const ratio = baselineMs / batchMs;
          best = Math.max(best, ratio);
          tries.push(`your batch ${ms(batchMs)} (${before} of ${TIMING_N} publishes had reached the proxy before the broker's first confirm), one by one ${ms(baselineMs)}: ${ratio.toFixed(1)}×`);
          if (ratio >= RATIO) break;
        }
        w.proxy.latency(0);
        if (best < RATIO) {
          t.fail(
            `With ${LATENCY_MS} ms of latency added each way on the proxy (a network between services), the grader timed a batch of ${TIMING_N} through your publishBatch() against its own publisher waiting for each confirm in turn, on the same broker and path: ${tries.join("; ")}. The batch must be at least ${RATIO}× faster in one of ${ATTEMPTS} tries. A batch that waits once costs about one round trip; one that waits per message costs ${TIMING_N}.`,
          );
        }
      },
    },
    {
      name: "without every confirm, publishBatch rejects at its deadline, naming the unconfirmed messages",
      hint: "Start one timer of confirmTimeoutMs when publishBatch() is called; when it fires with answers still missing, reject with failedIds listing those (and any nacked ones). Never resolve because the timer fired. Each publisher has its own deadline.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t);
        const dA = t.rng.int(300, 450);
        const dB = dA + t.rng.int(500, 700);
        const pubA = await newPublisher(t, w.host, w.conn, w.exchange, { confirmTimeoutMs: dA });
        const pubB = await newPublisher(t, w.host, w.conn, w.exchange, { confirmTimeoutMs: dB });
        const [key, badKey] = twoKeys(t.rng);
        const queue = t.names.queue("late");
        const full = t.names.queue("full");
        await Promise.all([w.obs.queue(t, queue, w.exchange, [key]), w.obs.fullQueue(t, full, w.exchange, badKey)]);
        const intro = `Publishers A ({ confirmTimeoutMs: ${dA} }) and B ({ confirmTimeoutMs: ${dB} }) share one connection; each published a batch, confirmed as usual.`;
        const warmA = new BatchCall("A's first batch", makeBatch(t.rng, "wA", 3, () => key), pubA, w.pulse);
        const warmB = new BatchCall("B's first batch", makeBatch(t.rng, "wB", 3, () => key), pubB, w.pulse);
        await w.pulse.until(() => warmA.state !== "pending" && warmB.state !== "pending", 5000, () => `With nothing held back, ${warmA.label} ${warmA.outcome} and ${warmB.label} ${warmB.outcome}.`);
        mustResolve(t, warmA, "With nothing held back,");
        mustResolve(t, warmB, "With nothing held back,");

        // A's batch: the first k-1 messages are answered (one of them nacked: a full queue), the
        // rest are not (their confirms held). B's batch: no confirm at all. Each must reject at its
        // own deadline, counted from its call, naming the nacked message too.
        const nA = t.rng.int(6, 12);
        const k = t.rng.int(2, nA);
        const badAt = t.rng.int(0, k - 2);
        const gate = stopAtPublish(w, 1, k);
        const a = new BatchCall("A's batch", makeBatch(t.rng, "A", nA, (i) => (i === badAt ? badKey : key)), pubA, w.pulse);
        await w.pulse.until(
          () => gate.stoppedAt !== null && w.ledger.passed(a.ids.slice(0, k - 1)),
          3000,
          () => `${intro} Then A published ${nA} messages; within 3 s ${gate.stoppedAt ? `the broker's answers for the first ${k - 1} had not all reached your connection (${w.ledger.fate(a.ids.find((id) => !w.ledger.of(id)?.confirm?.passedAt)!)})` : `only ${w.ledger.crossed(a.ids)} had been published`}.`,
        );
        const heldIds = new Set(a.ids.slice(k - 1));
        const nB = t.rng.int(4, 10);
        const bBatch = makeBatch(t.rng, "B", nB, () => key);
        // B's publishes wait at the proxy, on their way to the broker; shortly before B's deadline
        // the first one alone goes on, so its ack reaches your code late: the deadline counts from
        // the call, not from the last confirm.
        for (const m of bBatch.slice(1)) heldIds.add(m.messageId);
        w.wire.hold((c) => c.covered.some((p) => heldIds.has(String(p.properties?.messageId))));
        gate.open();
        const bFrames: AmqpFrame[] = [];
        let bCalled = false;
        w.proxy.tap("toBroker", (f) => {
          if (bCalled && isPublish(f) && f.link === 1) bFrames.push(f);
        });
        const gateB = stopAtPublish(w, 1, 1);
        bCalled = true;
        const b = new BatchCall("B's batch", bBatch, pubB, w.pulse);
        const lateFirst = setTimeout(() => gateB.moveTo((f) => f === bFrames[1]), Math.max(0, dB - 200 - (performance.now() - b.startedAt)));
        t.defer(() => clearTimeout(lateFirst));
        const setting = `${intro} Then A published ${nA} messages, of which the broker's answers for the first ${k - 1} reached your code (#${badAt + 1} went to a full queue and was nacked, the others were acked) and those of the other ${nA - k + 1} were held at the proxy; B published ${nB}, which the grader held back on their way to the broker, except that ${dB - 200} ms after the call it let B's first message through (its ack reached your code).`;
        const deadlineOf = (c: BatchCall) => (c === a ? dA : dB);
        const fault = (c: BatchCall): string | null => {
          const d = deadlineOf(c);
          if (c.state === "pending") return c.elapsed > d + LATE_MS ? `${lead(setting, c.label)} ${c.outcome}, past its deadline of ${d} ms: at the deadline publishBatch() must reject.` : null;
          if (c.state === "resolved") return `${lead(setting, c.label)} ${c.outcome}, although the broker's answers for ${listIds(c.ids.filter((id) => heldIds.has(id)))} had not reached your code: with answers missing at the deadline, the call rejects; it never resolves on a timer.`;
          if (c.elapsed < d - EARLY_TOLERANCE_MS) return `${lead(setting, c.label)} ${c.outcome}, before its deadline of ${d} ms (counted from its own call).`;
          if (c.elapsed > d + LATE_MS) return `${lead(setting, c.label)} ${c.outcome}, more than ${LATE_MS} ms past its deadline of ${d} ms: the deadline counts from the call (not from the last confirm that arrived).`;
          return null;
        };
        await w.pulse.until(
          () => a.state !== "pending" && b.state !== "pending",
          dB + LATE_MS + 200,
          () => fault(a.state === "pending" ? a : b) ?? `${lead(setting, a.label)} ${a.outcome}; ${b.label} ${b.outcome}.`,
          () => fault(a) ?? fault(b),
        );
        for (const c of [a, b]) {
          const f = fault(c);
          if (f) t.fail(f);
          const expected = c.ids.filter((id) => !w.ledger.of(id)?.confirm?.passedAt || w.ledger.of(id)!.confirm!.passedAt! > c.settledAt! || w.ledger.of(id)!.confirm!.how === "nack");
          mustRejectWith(t, c, expected, `${setting} At its deadline (${deadlineOf(c)} ms),`);
        }

        // The late acks now reach your code; they settle nothing else, and A keeps working.
        clearTimeout(lateFirst);
        gateB.open();
        w.wire.release();
        await w.host.turns();
        const next = new BatchCall("A's next batch", makeBatch(t.rng, "A2", t.rng.int(3, 6), () => key), pubA, w.pulse);
        await w.pulse.until(() => next.state !== "pending", 5000, () => `${setting} Both rejected at their deadlines; then the grader let the late acks through, and ${next.label} ${next.outcome}: a timeout must not break the publisher.`);
        mustResolve(t, next, `${setting} Both rejected at their deadlines, then the late acks reached your code;`);
        if (w.host.escaped.length) t.fail(`${setting} When the late acks arrived, an error escaped your code: ${errText(w.host.escaped[0])}.`);
      },
    },
    {
      name: "concurrent batches on one publisher each settle on their own messages' confirms",
      hint: "channel.waitForConfirms() waits for every message outstanding on the channel, so a nack in one batch fails another batch waiting on the same channel. Wait for this batch's own messages (their callbacks), or give each batch a channel of its own.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const [goodKey, badKey] = twoKeys(t.rng);
        const ok = t.names.queue("ok");
        const full = t.names.queue("full");
        await Promise.all([w.obs.queue(t, ok, w.exchange, [goodKey]), w.obs.fullQueue(t, full, w.exchange, badKey)]);
        // Two rounds, every run: the nack in the batch called first, then in the one called second.
        for (const nackIn of ["first", "second"] as const) {
          const nA = t.rng.int(5, 10);
          const nB = t.rng.int(5, 10);
          const badAt = t.rng.int(0, (nackIn === "first" ? nA : nB) - 1);
          const badOf = (which: "first" | "second") => (i: number) => (which === nackIn && i === badAt ? badKey : goodKey);
          w.wire.hold();
          const a = new BatchCall("the batch called first", makeBatch(t.rng, `${nackIn}A`, nA, badOf("first")), pub, w.pulse);
          const b = new BatchCall("the batch called second", makeBatch(t.rng, `${nackIn}B`, nB, badOf("second")), pub, w.pulse);
          const [nacked, clean] = nackIn === "first" ? [a, b] : [b, a];
          const badId = nacked.ids[badAt]!;
          const setting = `Two publishBatch() calls ran at once on one publisher: ${nA} messages, then ${nB}. Message #${badAt + 1} of ${nacked.label} went to a full queue and was nacked; every other message was acked. The grader held the answers until the broker had given all of them (all of the first batch's, when the second waited its turn), then let them through.`;
          const both = [...a.ids, ...b.ids];
          const early = () => settledEarly(w, a, setting)() ?? settledEarly(w, b, setting)();
          const unanswered = () => `${setting} Within 3 s the broker had not answered for every message: ${w.ledger.fate(both.find((id) => !w.ledger.of(id)?.confirm)!)}.`;
          // A publisher may run its batches one after another: then the second is published only
          // once the first has settled, after the answers are let through.
          await w.pulse.until(() => w.ledger.answered(a.ids) && (w.ledger.crossed(b.ids) === 0 || w.ledger.answered(b.ids)), 3000, unanswered, early);
          if (w.ledger.crossed(b.ids) === 0) await w.pulse.watch(QUEUED_MS, early);
          if (w.ledger.crossed(b.ids) > 0) await w.pulse.until(() => w.ledger.answered(both), 3000, unanswered, early);
          w.wire.release();
          await w.pulse.until(() => a.state !== "pending" && b.state !== "pending", SETTLE_MS, () => `${setting} ${ms(SETTLE_MS)} after every answer reached your connection, ${a.label} ${a.outcome} and ${b.label} ${b.outcome}.`);
          if (clean.state === "rejected") {
            t.fail(`${lead(setting, clean.label)} ${clean.outcome}, although the broker acked every one of its messages: the nack belonged to the other batch. Each call settles on its own messages' confirms.`);
          }
          mustResolve(t, clean, setting);
          mustRejectWith(t, nacked, [badId], setting);
        }
      },
    },
    {
      name: "a batch whose connection or channel closes mid-way rejects at once",
      hint: "When the channel closes, amqplib calls the callback of every unconfirmed publish with an error, and publish() on a closed channel throws. Reject the batch then, naming every message that was not acked; don't wait for the deadline.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("cut");
        await w.obs.queue(t, queue, w.exchange, [key]);
        const warm = new BatchCall("a first batch", makeBatch(t.rng, "warm", t.rng.int(2, 5), () => key), pub, w.pulse);
        await w.pulse.until(() => warm.state !== "pending", 5000, () => `With nothing held back, ${warm.label} ${warm.outcome}.`);
        mustResolve(t, warm, "With nothing held back,");

        // Mid-publish: the first k-1 messages reach the broker and are acked (the acks reach your
        // code), then the network fails before message k gets through.
        const n = t.rng.int(10, 30);
        const k = t.rng.int(2, n - 1);
        const gate = stopAtPublish(w, 1, k);
        const call = new BatchCall("the batch", makeBatch(t.rng, "cut", n, () => key), pub, w.pulse);
        const setting = `After a first batch had been confirmed, publishBatch() was called with ${n} messages; the first ${k - 1} reached the broker and their acks reached your code, then the connection dropped before message #${k} got through.`;
        await w.pulse.until(
          () => gate.stoppedAt !== null && w.ledger.passed(call.ids.slice(0, k - 1)),
          3000,
          () => `publishBatch() was called with ${n} messages; within 3 s ${gate.stoppedAt ? `the acks for the first ${k - 1} had not all reached your connection (${w.ledger.fate(call.ids.find((id) => !w.ledger.of(id)?.confirm?.passedAt)!)})` : `only ${w.ledger.crossed(call.ids)} had been published`}.`,
          settledEarly(w, call, `publishBatch() was called with ${n} messages, and the grader held back message #${k} for a moment.`),
        );
        await w.host.turns();
        await sleep(30);
        w.proxy.cut();
        await w.pulse.until(() => call.state !== "pending", CUT_MS, () => `${setting} ${ms(CUT_MS)} later the call ${call.outcome} (its deadline, ${DEFAULT_BATCH_CONFIRM_TIMEOUT_MS} ms, was far off). When the channel closes, the batch must reject at once.`);
        mustRejectWith(t, call, call.ids.slice(k - 1), setting);

        const after = new BatchCall("a batch on the dead connection", makeBatch(t.rng, "dead", t.rng.int(2, 5), () => key), pub, w.pulse);
        await w.pulse.until(() => after.state !== "pending", CUT_MS, () => `After the connection dropped, ${after.label} ${after.outcome}: it cannot reach the broker, so it must reject.`);
        mustRejectWith(t, after, after.ids, "After the connection dropped,");
        try {
          await t.within("close() after the connection dropped", CUT_MS, pub.close());
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`After the connection dropped, close() rejected with ${errText(e)}: with nothing left open, close() has nothing to do and resolves (a service's shutdown path calls it whatever happened before).`);
        }

        // The broker closes the channel (its exchange was deleted): the batch rejects, and the
        // channel's error does not take the process down.
        const conn2 = await learnerConnection(t, w.host, w.proxy);
        const pubX = await newPublisher(t, w.host, conn2, w.exchange);
        const del = await w.obs.throwaway();
        await del.deleteExchange(w.exchange);
        await del.close().catch(() => {});
        const gone = new BatchCall("the batch", makeBatch(t.rng, "gone", t.rng.int(3, 8), () => key), pubX, w.pulse);
        const setting3 = `On a new connection, the exchange was deleted under the publisher and publishBatch() was called: the broker closes the channel (404 NOT_FOUND) instead of confirming.`;
        await w.pulse.until(() => gone.state !== "pending" || w.host.escaped.length > 0 || !w.host.alive, CUT_MS, () => `${setting3} ${ms(CUT_MS)} later the call ${gone.outcome}.`);
        if (!w.host.alive || w.host.escaped.length) {
          t.fail(`${setting3} The channel's error escaped your code${w.host.escaped.length ? `: ${errText(w.host.escaped[0])}` : " and the process died"}. A channel without an "error" listener turns a broker-side close into an uncaught exception: listen for it (ch.on("error", …)) and let the batch reject.`);
        }
        mustRejectWith(t, gone, gone.ids, setting3);
        await w.obs.conn.createChannel().then(async (ch) => {
          await ch.assertExchange(w.exchange, "topic", { durable: true });
          await ch.close();
        });

        // Everything published, every confirm held, then the network fails: nothing was confirmed.
        let pub2: BatchPublisher;
        try {
          pub2 = await t.within("createBatchPublisher()", 5000, w.host.call<BatchPublisher>("createBatchPublisher", conn2, w.exchange));
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`${setting3} The batch rejected, but then createBatchPublisher() on the same connection failed: ${errText(e)}. An "error" event on a channel with no listener is rethrown by amqplib and takes the whole connection down: listen for it on every channel you open.`);
        }
        w.wire.hold();
        const m = t.rng.int(5, 15);
        const second = new BatchCall("the batch on a new connection", makeBatch(t.rng, "held", m, () => key), pub2, w.pulse);
        const setting2 = `On a new connection, publishBatch() was called with ${m} messages; the broker acked them all, but the grader held the acks, and the connection dropped.`;
        await w.pulse.until(() => w.ledger.answered(second.ids), 3000, () => `On a new connection, publishBatch() was called with ${m} messages; within 3 s the broker had not answered for all: ${w.ledger.fate(second.ids.find((id) => !w.ledger.of(id)?.confirm)!)}.`, settledEarly(w, second, setting2));
        w.proxy.cut();
        w.wire.release();
        await w.pulse.until(() => second.state !== "pending", CUT_MS, () => `${setting2} ${ms(CUT_MS)} later the call ${second.outcome}.`);
        mustRejectWith(t, second, second.ids, `${setting2} Nobody knows whether the broker kept them:`);
      },
    },
    {
      name: "close() closes the publisher's channels and nothing else",
      hint: "Every channel you open, close: in close(), or right after each batch if you open one per batch. The connection was handed to you and the exchange is shared with consumers: leave both alone.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t);
        const pub = await newPublisher(t, w.host, w.conn, w.exchange);
        const key = randomKey(t.rng);
        const queue = t.names.queue("all");
        await w.obs.queue(t, queue, w.exchange, [key]);
        for (let i = 0; i < 2; i++) {
          const call = new BatchCall(`batch ${i + 1}`, makeBatch(t.rng, `c${i}`, t.rng.int(2, 6), () => key), pub, w.pulse);
          await w.pulse.until(() => call.state !== "pending", 5000, () => `${lead("", call.label)} ${call.outcome}.`);
          mustResolve(t, call, "With nothing held back,");
        }
        await t.within("close()", 3000, pub.close());
        try {
          await t.within("close() a second time", 3000, pub.close());
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`close() resolved, but a second close() rejected with ${errText(e)}: calling it again has nothing left to close, and resolves.`);
        }
        const frames = (dir: "toBroker" | "toClient", c: number, m: number) => w.proxy.seen.filter((s) => s.direction === dir && s.frame.link === 1 && s.frame.type === 1 && s.frame.classId === c && s.frame.methodId === m).length;
        const opened = () => frames("toBroker", 20, 10);
        const closed = () => frames("toBroker", 20, 40) + frames("toClient", 20, 40);
        const closedConnection = () => frames("toBroker", 10, 50) > 0;
        const connectionMessage = "close() closed the connection it was given (connection.close went to the broker). The connection belongs to the caller: close only the channels the publisher opened.";
        await w.host.turns();
        await w.pulse.until(
          () => opened() - closed() === 0,
          1000,
          () => `After close() resolved, ${opened() - closed()} channel(s) the publisher opened are still open (opened ${opened()}, closed ${closed()}). Channels left open pile up until the connection hits its channel limit.`,
          () => (closedConnection() ? connectionMessage : null),
        );
        if (closedConnection()) t.fail(connectionMessage);
        if (!(await w.obs.exchangeExists(w.exchange))) t.fail(`After close(), exchange "${w.exchange}" no longer exists: consumers' queues are bound to it. close() closes channels only.`);
        let next: BatchPublisher;
        try {
          next = await newPublisher(t, w.host, w.conn, w.exchange);
        } catch (e) {
          if (closedConnection()) t.fail(connectionMessage);
          throw e;
        }
        const call = new BatchCall("a batch on a new publisher after close()", makeBatch(t.rng, "again", 2, () => key), next, w.pulse);
        await w.pulse.until(() => call.state !== "pending", 5000, () => `${lead("", call.label)} ${call.outcome}.`);
        mustResolve(t, call, "On a new publisher, created on the same connection after the first one's close(),");
      },
    },
  ],
});
