import { defineGrader, describeValue, newTimers } from "../../../src/kit/index.ts";
import type { CheckContext, Host, PendingTimer } from "../../../src/kit/index.ts";
import type { Producer } from "kafkajs";
import type {
  CreateTransactionalPublisher,
  OutgoingMessage,
  PublishHooks,
  TransactionalPublisher,
} from "../../../src/contracts/transactional-producer.ts";
import { Observer, TxnWire, errorText, gate, partitionFor, plural, settle, where, type SeenRecord, type Settled } from "./grader-util.ts";

type Submission = { createTransactionalPublisher: CreateTransactionalPublisher };
type T = CheckContext<Submission>;

/** Three topics with 1, 3 and 2 partitions: a batch spans topics and partitions, and keys pick among several. */
const TOPICS = [
  { base: "orders", partitions: 1 },
  { base: "payments", partitions: 3 },
  { base: "shipments", partitions: 2 },
];

/**
 * Batch sizes past any chunk size a learner might pick ("commit every 10", "every 100"): a
 * batch cut into several transactions shows a commit inside it. Failures and holds land near
 * the end of such a batch, after any chunk a learner would commit early.
 */
const BIG = { min: 130, max: 220 };

const PUBLISH_MS = 10_000;
/** Commit and abort markers land a moment after commit()/abort() return. */
const STABLE_MS = 8_000;
/** For a publish() the grader holds inside beforeSend while it looks at the broker. */
const HELD_MS = 2 * PUBLISH_MS;
/**
 * How long the grader holds a commit or an abort (the EndTxn request) on its way to the broker,
 * and beforeSend mid-batch: at least HOLD_MIN_MS, and past every one-shot timer of up to
 * HOLD_MS the learner's process set meanwhile ("commit, or give up after a second"), so a
 * publish() that stops waiting shows. The host reports its timers (`host.timers()`), so a
 * correct publisher is held for HOLD_MIN_MS, not for the longest timeout a learner might pick.
 */
const HOLD_MIN_MS = 400;
const HOLD_MS = 20_000;
/**
 * beforeSend is held longer: a publisher that cuts a slow batch into transactions by elapsed
 * time ("commit when the transaction has been open for 2 s") sets no timer the grader could see.
 */
const BEFORE_SEND_HOLD_MIN_MS = 2_500;
/** After the last such timer fired: time for what it set off to reach the wire. */
const AFTER_TIMER_MS = 150;

/**
 * Waits from `startedAt` until `done()`, or until `minMs` have passed and no one-shot timer
 * (of 20 ms to HOLD_MS) that the host did not have in `before` is pending, or HOLD_MS. Returns
 * how long it held.
 */
async function holdPastTimers(host: Host, before: PendingTimer[], startedAt: number, done: () => boolean, minMs = HOLD_MIN_MS): Promise<number> {
  let sawTimer = false;
  for (;;) {
    const elapsed = Date.now() - startedAt;
    if (done() || elapsed >= HOLD_MS) return elapsed;
    const pending = newTimers(before, await host.timers().catch(() => []), 20).filter((x) => x.ms <= HOLD_MS);
    if (pending.length) sawTimer = true;
    else if (elapsed >= minMs) {
      if (!sawTimer) return elapsed;
      sawTimer = false;
      await new Promise((r) => setTimeout(r, AFTER_TIMER_MS));
      continue;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}
/** Past any chunk size a learner might cut a batch into ("at most 1000 records per transaction"). */
const HUGE = { min: 1001, max: 1150 };
/**
 * The learner's client's retries. Short first ones keep back-to-back transactions fast (a new
 * transaction's AddPartitionsToTxn gets CONCURRENT_TRANSACTIONS while the previous commit's
 * markers are still being written); eight cover a slow broker. kafkajs's InitProducerId retries,
 * which wait out a fenced owner's abort, ignore these and use its defaults (about 300 ms a step).
 */
const LEARNER_RETRY = { retries: 8, initialRetryTime: 30, maxRetryTime: 1000 };

class InjectedFailure extends Error {
  override name = "InjectedFailure";
}

const short = (topic: string): string => topic.slice(topic.lastIndexOf(".") + 1);
const keyText = (key: string | null): string => (key === null ? "null" : JSON.stringify(key));

/** Keys with quotes, colons, spaces and non-ASCII, of every length modulo 4 (murmur2's tail). */
function makeKey(t: T, topic: string): string {
  const base = short(topic).slice(0, -1);
  const n = t.rng.int(1, 999);
  return t.rng.pick([`${base}-${n}`, `${base} "${n}": eu west`, `${base}:${n}:ü`, `${n}`, `${base}/${n} ✓`, `${base}'${n}`]);
}

/** A key that Kafka's default partitioner puts on `partition`. */
function keyOn(t: T, topic: string, partitions: number, partition: number): string {
  for (;;) {
    const key = makeKey(t, topic);
    if (partitionFor(key, partitions) === partition) return key;
  }
}

/**
 * A batch of `n` messages over `topics`. It opens with one message per topic (shuffled), so
 * any prefix of two or more messages spans two topics when it can; then one message on every
 * partition (so a wrong partition shows on every seed); then messages on random topics.
 * Values are unique per batch.
 */
function makeBatch(t: T, obs: Observer, n: number, tag: string, topics = obs.topics.map((x) => x.name)): OutgoingMessage[] {
  const order = t.rng.shuffle(topics).map((topic) => ({ topic, key: makeKey(t, topic) }));
  const each = topics.flatMap((topic) => Array.from({ length: obs.partitions(topic) }, (_, p) => ({ topic, key: keyOn(t, topic, obs.partitions(topic), p) })));
  order.push(...t.rng.shuffle(each));
  while (order.length < n) {
    const topic = t.rng.pick(topics);
    order.push({ topic, key: makeKey(t, topic) });
  }
  return order.slice(0, n).map(({ topic, key }, i) => ({
    topic,
    key,
    value: JSON.stringify({ batch: tag, n: i, amount: t.rng.int(1, 99_999) / 100, note: "größe ✓" }),
  }));
}

function describeMessage(batch: OutgoingMessage[], index: number): string {
  const m = batch[index]!;
  return `#${index} (${short(m.topic)}, key ${keyText(m.key)})`;
}

/** A submission host, the grader's proxy its Kafka connections go through, and the kafkajs client built there. */
interface LearnerEnv<W extends TxnWire | null = TxnWire> {
  host: Host;
  wire: W;
  kafka: unknown;
}

/**
 * The learner's environment in `host`: a kafkajs client built there (the learner's code shares
 * that process, so nothing it reports is trusted). With `wire`, its every broker connection goes
 * through a proxy of the grader's, where requests are seen, and commits and aborts held when a
 * check says so; checks that judge only the broker skip the extra hop.
 */
async function learnerEnv(t: T, host: Host, wire: true): Promise<LearnerEnv>;
async function learnerEnv(t: T, host: Host, wire: boolean): Promise<LearnerEnv<TxnWire | null>>;
async function learnerEnv(t: T, host: Host, withWire: boolean): Promise<LearnerEnv<TxnWire | null>> {
  const wire = withWire ? await TxnWire.start(t) : null;
  const kafka = await host.cap("kafka.client", {
    brokers: t.kafkaBrokers,
    clientId: `msglab-learner-${host.index}`,
    config: { retry: LEARNER_RETRY },
    ...(wire ? { via: wire.address } : {}),
  });
  return { host, wire, kafka };
}

/** The learner's publisher, built in `env.host` on the client built there. */
async function newPublisher(t: T, env: LearnerEnv<TxnWire | null>, transactionalId: string, who = "createTransactionalPublisher()"): Promise<TransactionalPublisher> {
  const publisher = await t.within(who, PUBLISH_MS, env.host.call<TransactionalPublisher>("createTransactionalPublisher", env.kafka, transactionalId));
  if (!publisher || typeof publisher.publish !== "function" || typeof publisher.close !== "function") {
    t.fail(`${who} resolved to ${describeValue(publisher)}; it must resolve to an object with publish() and close().`);
  }
  return publisher;
}

/**
 * The world of one check, built at once: the grader's topics and observer, and the learner's
 * publisher (with a transactional id of its own) in the check's first host. A publisher needs
 * no topic to exist, so neither waits for the other.
 */
async function arrange(t: T, specs: Parameters<typeof Observer.create>[1] = TOPICS, wire = false): Promise<{ obs: Observer; publisher: TransactionalPublisher; env: LearnerEnv<TxnWire | null> }> {
  const [obs, [env, publisher]] = await Promise.all([
    Observer.create(t, specs),
    t
      .learnerHost()
      .then((host) => learnerEnv(t, host, wire))
      .then(async (env) => [env, await newPublisher(t, env, t.names.transactionalId("tx"))] as const),
  ]);
  return { obs, publisher, env };
}

/** `arrange`, with the learner's connections through the grader's proxy. */
async function arrangeOnWire(t: T, specs: Parameters<typeof Observer.create>[1] = TOPICS): Promise<{ obs: Observer; publisher: TransactionalPublisher; env: LearnerEnv }> {
  const { obs, publisher, env } = await arrange(t, specs, true);
  return { obs, publisher, env: env as LearnerEnv };
}

/**
 * Holds the first EndTxn (commit or abort, as `committed` says) on the wire (see holdPastTimers;
 * less once publish() has settled): a publish() that settles meanwhile did not wait for that
 * request's answer. `before`: the host's timers before publish() was called. Returns a probe:
 * whether `settled()` was true while held, whether the EndTxn came, and for how long it was held.
 */
function holdFirstEndTxn(env: LearnerEnv, committed: boolean, before: PendingTimer[], settled: () => boolean): { whileHeld: () => boolean; held: () => boolean; heldFor: () => string } {
  let held = false;
  let early = false;
  let released = false;
  let heldMs = -1;
  let heldAt = 0;
  env.wire.onEndTxn = async (e) => {
    if (held || e.committed !== committed) return;
    held = true;
    heldAt = Date.now();
    // Held past any timer the learner's code set (a publish() racing the commit against a timer
    // resolves meanwhile), and let go at once when publish() settles: that is already the verdict.
    heldMs = await holdPastTimers(env.host, before, Date.now(), settled);
    await env.host.turns().catch(() => {});
    early = settled();
    released = true;
  };
  return { whileHeld: () => early || (held && !released && settled()), held: () => held, heldFor: () => `${heldMs >= 0 ? heldMs : Date.now() - heldAt} ms` };
}

/**
 * Fails unless exactly one commit, and no abort, crossed the wire since `from` (a snapshot of
 * `endTxnCount`): one publish() is one transaction, however long it took.
 */
function expectOneCommit(t: T, env: LearnerEnv, from: { commits: number; aborts: number }, what: string): void {
  const commits = env.wire.ended(true) - from.commits;
  const aborts = env.wire.ended(false) - from.aborts;
  if (commits !== 1 || aborts !== 0) {
    t.fail(
      `${what} resolved after ${plural(commits, "commit")}${aborts ? ` and ${plural(aborts, "abort")}` : ""} (EndTxn requests) on the kafka client it was given: one publish() is one transaction, committed once after its last message, however long the batch takes. A batch cut into several transactions lets readers see its first part without the rest.`,
    );
  }
}

const endTxnCount = (env: LearnerEnv) => ({ commits: env.wire.ended(true), aborts: env.wire.ended(false) });

/** Polls `cond` for up to `ms`: for a failure message that depends on what came late. */
async function eventually(cond: () => boolean, ms = 1000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** Follows a learner promise: `state.settled` flips when it settles, `state.at` runs then. */
function track<V>(p: Promise<V>, at: () => void = () => {}): { promise: Promise<V>; state: { settled: boolean } } {
  const state = { settled: false };
  const done = () => {
    state.settled = true;
    at();
  };
  p.then(done, done);
  return { promise: p, state };
}

/** Fails unless the learner's publish() resolved; rethrows its error as the learner's. */
function mustResolve(t: T, what: string, result: Settled<void>, ms = PUBLISH_MS): void {
  if (result.ok === "timeout") t.fail(`${what} did not settle within ${ms} ms.`);
  if (result.ok === false) t.fail(`${what} rejected: ${errorText(result.error)}`);
}

interface Named {
  name: string;
  messages: OutgoingMessage[];
}

/**
 * Compares what a reader saw with exactly the messages expected: each once, on its topic and
 * on the partition Kafka's default partitioner gives its key, with its key and value, and in
 * batch order within each partition. Nothing else may show up.
 */
function expectExactly(t: T, obs: Observer, seen: SeenRecord[], batches: Named[], who: string, whyMissing = "every message of a committed batch must be visible."): void {
  const expected = new Map<string, { batch: string; index: number; message: OutgoingMessage; order: number }>();
  let order = 0;
  for (const b of batches) b.messages.forEach((message, index) => expected.set(message.value, { batch: b.name, index, message, order: order++ }));
  const count = new Map<string, number>();
  for (const r of seen) {
    const e = expected.get(r.value);
    if (!e) t.fail(`${who} saw a record nobody published in this check: ${describeValue(r.value)} on ${short(r.topic)}[${r.partition}].`);
    const n = (count.get(r.value) ?? 0) + 1;
    count.set(r.value, n);
    const what = `message #${e.index} of ${e.batch} (${short(e.message.topic)}, key ${keyText(e.message.key)})`;
    if (n === 2) t.fail(`${who} saw ${what} twice: a batch must be written exactly once.`);
    if (r.topic !== e.message.topic) t.fail(`${who} found message #${e.index} of ${e.batch} on ${short(r.topic)}, but it was addressed to ${short(e.message.topic)}.`);
    if (r.key !== e.message.key) t.fail(`${who} saw message #${e.index} of ${e.batch} with key ${keyText(r.key)}; it was published with key ${keyText(e.message.key)}. Keep the key: it picks the partition.`);
    const partitions = obs.partitions(r.topic);
    const right = partitionFor(e.message.key, partitions);
    if (r.partition !== right) {
      t.fail(
        `${who} found ${what} on ${short(r.topic)}[${r.partition}], but Kafka's default partitioner puts key ${keyText(e.message.key)} on ${short(r.topic)}[${right}] (murmur2 of the key's UTF-8 bytes, modulo ${partitions} partitions). Send the key and let the producer's default partitioner choose; do not set a partition or another partitioner.`,
      );
    }
  }
  for (const e of expected.values()) {
    if (!count.has(e.message.value)) {
      t.fail(`${who} never saw message #${e.index} of ${e.batch} (${short(e.message.topic)}, key ${keyText(e.message.key)}): ${whyMissing}`);
    }
  }
  const lastOrder = new Map<string, number>();
  for (const r of [...seen].sort((a, b) => a.offset - b.offset)) {
    const p = where(r.topic, r.partition);
    const e = expected.get(r.value)!;
    if ((lastOrder.get(p) ?? -1) > e.order) {
      t.fail(`${who} saw message #${e.index} of ${e.batch} before an earlier message on ${short(r.topic)}[${r.partition}]: send the messages one after another, in batch order.`);
    }
    lastOrder.set(p, e.order);
  }
}

/** Waits until no transaction is open on any partition, or fails with `why`. */
async function expectStable(t: T, obs: Observer, why: (where: string) => string) {
  const markers = await obs.writeMarkers();
  const stuck = await obs.waitStable(markers, STABLE_MS);
  if (stuck.length) t.fail(why(stuck.map((p) => short(p)).join(", ")));
  return markers;
}

/** Reads both isolation levels once the partitions are stable. */
async function readBoth(t: T, obs: Observer, why: (where: string) => string): Promise<{ committed: SeenRecord[]; onBroker: SeenRecord[] }> {
  const markers = await expectStable(t, obs, why);
  const [committed, onBroker] = await Promise.all([obs.read(markers, "read_committed"), obs.read(markers, "read_uncommitted")]);
  return { committed, onBroker };
}

const of = (records: SeenRecord[], batch: OutgoingMessage[]): SeenRecord[] => {
  const values = new Set(batch.map((m) => m.value));
  return records.filter((r) => values.has(r.value));
};

function listed(batch: OutgoingMessage[], records: SeenRecord[], max = 5): string {
  const index = new Map(batch.map((m, i) => [m.value, i]));
  const parts = records.slice(0, max).map((r) => describeMessage(batch, index.get(r.value)!));
  return parts.join(", ") + (records.length > max ? `, … (${records.length - max} more)` : "");
}

/**
 * The aborted writes stay in the log: a read_uncommitted reader shows that the messages before
 * the failure did reach the broker (so it is the abort that hides them from read_committed),
 * and, with `nothingAfter`, that nothing was sent once the batch had failed.
 */
function expectSentBefore(t: T, onBroker: SeenRecord[], batch: OutgoingMessage[], failedAt: number, what: string, nothingAfter: boolean): void {
  const logged = new Set(onBroker.map((r) => r.value));
  for (let i = 0; i < batch.length; i++) {
    const onLog = logged.has(batch[i]!.value);
    if (i < failedAt && !onLog) {
      t.fail(
        `${what}, but message ${describeMessage(batch, i)} never reached the broker (a read_uncommitted reader, which also sees aborted writes, does not see it): each message must be sent, and its send awaited, before beforeSend is called for the next one.`,
      );
    }
    if (nothingAfter && i >= failedAt && onLog) {
      t.fail(`Message ${describeMessage(batch, i)} was sent although ${what}: stop at the first failure.`);
    }
  }
}

/** Hooks that record each call and can fail or hold at one index. */
function hooksFor(batch: OutgoingMessage[], opts: { failAt?: number; holdAt?: number }) {
  const calls: number[] = [];
  const wrongArgs: string[] = [];
  const reached = gate();
  const release = gate();
  const hooks: PublishHooks = {
    async beforeSend(message, index) {
      calls.push(index);
      const m = batch[index];
      const same = m !== undefined && message !== null && typeof message === "object" && message.topic === m.topic && message.key === m.key && message.value === m.value;
      if (!same && wrongArgs.length === 0) wrongArgs.push(`beforeSend(${describeValue(message, 120)}, ${describeValue(index)})`);
      if (index === opts.failAt) throw new InjectedFailure(`beforeSend failed on purpose at message #${index} (the grader's simulated failure)`);
      if (index === opts.holdAt) {
        reached.open();
        await release.promise;
      }
    },
  };
  return { hooks, calls, wrongArgs, reached, release };
}

type Hooks = ReturnType<typeof hooksFor>;

function expectRightArgs(t: T, hooks: Hooks): void {
  if (hooks.wrongArgs.length) {
    t.fail(`publish() called ${hooks.wrongArgs[0]}: beforeSend(message, index) gets the message at that index of the batch, as given.`);
  }
}

/**
 * Fails unless beforeSend was called for 0..index, in order, before publish() gave up. (What
 * comes after, such as a retry of the whole batch that fails the same way, is not judged here.)
 */
function expectCalledUpTo(t: T, hooks: Hooks, index: number, result: Settled<void>): void {
  expectRightArgs(t, hooks);
  const { calls } = hooks;
  const inOrder = calls.length >= index + 1 && calls.slice(0, index + 1).every((c, i) => c === i);
  if (inOrder) return;
  const why = result.ok === false ? ` It rejected with: ${errorText(result.error)}.` : "";
  t.fail(`publish() called beforeSend for indexes [${shortList(calls)}] before it settled; it must call it once per message, in order, up to the failing message #${index}.${why}`);
}

function shortList(xs: number[]): string {
  return xs.length <= 12 ? xs.join(", ") : `${xs.slice(0, 5).join(", ")}, … ${xs.slice(-5).join(", ")} (${xs.length} calls)`;
}

/** Waits until the held hook is reached; fails if publish() settles first or never gets there. */
async function waitHeld(t: T, held: Hooks, publishing: Promise<Settled<void>>, index: number, who: string): Promise<void> {
  const first = await Promise.race([held.reached.promise.then(() => "held" as const), publishing.then((r) => r)]);
  if (first === "held") {
    expectRightArgs(t, held);
    const inOrder = held.calls.every((c, i) => c === i) && held.calls.length === index + 1;
    if (!inOrder) t.fail(`${who} called beforeSend for indexes [${shortList(held.calls)}]; it must call it once per message, in order (0, 1, 2, ...).`);
    return;
  }
  if (first.ok === "timeout") t.fail(`${who} never called beforeSend for message #${index} within ${HELD_MS} ms (calls so far: [${shortList(held.calls)}]).`);
  if (first.ok === false) t.fail(`${who} rejected before calling beforeSend for message #${index}: ${errorText(first.error)}`);
  t.fail(`${who} resolved without calling beforeSend for message #${index} (calls: [${shortList(held.calls)}]): call it before sending each message.`);
}

/** The producer id and epoch records were written with, as "id/epoch" strings. */
const writers = (records: SeenRecord[]): string[] => [...new Set(records.map((r) => `${r.producerId}/${r.producerEpoch}`))];
const producerIds = (records: SeenRecord[]): string[] => [...new Set(records.map((r) => r.producerId))];

/** A transactional producer of the grader's own, in the grading process: another process with the same id. */
async function graderProducer(t: T, transactionalId: string): Promise<Producer> {
  const kafka = await t.kafka.client({ retry: LEARNER_RETRY });
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await producer.connect();
  t.defer(() => producer.disconnect());
  return producer;
}

export default defineGrader<Submission>({
  exports: { createTransactionalPublisher: "function" },
  checks: [
    {
      name: "committed batches reach read_committed readers: every message once, in order, on the partition its key picks, keys and values intact",
      hint: "Start one transaction per publish(), send every message through it with its key (awaiting each send), then await the commit.",
      timeoutMs: 50_000,
      async run(t) {
        const { obs, publisher, env } = await arrangeOnWire(t);
        const payments = obs.topics[1]!.name;
        const first = makeBatch(t, obs, t.rng.int(40, 100), "the first batch (all topics)");
        const second = makeBatch(t, obs, t.rng.int(15, 40), "the second batch (payments only)", [payments]);
        // The first batch's commit is held on the wire for a moment: publish() must still be pending then.
        let answeredAtResolve = -1;
        const before = endTxnCount(env);
        const timersBefore = await env.host.timers();
        const publishing = track(publisher.publish(first), () => (answeredAtResolve = env.wire.answered(true)));
        const probe = holdFirstEndTxn(env, true, timersBefore, () => publishing.state.settled);
        const firstEnd = await settle(PUBLISH_MS + HOLD_MS, publishing.promise);
        if (probe.whileHeld()) {
          t.fail(
            `publish() ${firstEnd.ok === true ? "resolved" : "settled"} while the grader held its commit (the EndTxn request) on the way to the broker (for ${probe.heldFor()}, past every timer your code had set): it did not wait for the commit's answer. Await transaction.commit() before resolving, however long it takes (no timeout of your own).`,
          );
        }
        mustResolve(t, `publish() of a ${first.length}-message batch over three topics`, firstEnd, PUBLISH_MS + HOLD_MS);
        if (answeredAtResolve < 1) {
          const late = await eventually(() => env.wire.seen(true) > 0);
          t.fail(
            late
              ? `publish() resolved before the broker had answered its commit (the grader's proxy passed the EndTxn answer on only afterwards): the caller is told "written" before Kafka agreed. Await transaction.commit() before resolving.`
              : `publish() resolved, but no commit (EndTxn) ever went out on the kafka client it was given: build the producer from that client, commit the transaction, and await the commit before resolving.`,
          );
        }
        expectOneCommit(t, env, before, `publish() of a ${first.length}-message batch over three topics`);
        const beforeNext = endTxnCount(env);
        const next = await settle(PUBLISH_MS, publisher.publish(second));
        if (next.ok === false) {
          t.fail(
            `The second publish(), called as soon as the first one resolved, rejected: ${errorText(next.error)}. publish() must resolve only once its transaction is committed (await the commit), leaving the publisher ready for the next batch.`,
          );
        }
        mustResolve(t, "The second publish()", next);
        expectOneCommit(t, env, beforeNext, "The second publish()");
        const markers = await expectStable(
          t,
          obs,
          (p) => `Both publish() calls resolved, but a transaction is still open on ${p}: a batch was never committed, so read_committed readers cannot see it.`,
        );
        expectExactly(
          t,
          obs,
          await obs.read(markers, "read_committed"),
          [
            { name: "the first batch", messages: first },
            { name: "the second batch", messages: second },
          ],
          "After both publish() calls resolved, a read_committed reader",
        );
      },
    },
    {
      name: "each batch is one transaction of one idempotent producer: every record carries its producer id and the transactional flag, and no commit falls inside a batch",
      hint: "Give kafkajs the transactionalId and idempotent: true, send through the transaction object (never producer.send()), and commit once, after the last message, whatever the batch's size or topics.",
      timeoutMs: 60_000,
      async run(t) {
        const { obs, publisher } = await arrange(t);
        const orders = obs.topics[0]!.name;
        const batches: Named[] = [
          { name: "the batch over all topics", messages: makeBatch(t, obs, t.rng.int(40, 80), "the batch over all topics") },
          { name: "the batch to orders only", messages: makeBatch(t, obs, t.rng.int(40, 80), "the batch to orders only", [orders]) },
          // Past any "at most N records per transaction" a learner might pick: a chunk's commit
          // marker then sits between two of its records on one partition.
          { name: "the batch of over a thousand messages", messages: makeBatch(t, obs, t.rng.int(HUGE.min, HUGE.max), "the batch of over a thousand messages") },
        ];
        for (const b of batches) {
          const ms = b.messages.length > 500 ? 4 * PUBLISH_MS : PUBLISH_MS;
          mustResolve(t, `publish() of ${b.name} (${b.messages.length} messages)`, await settle(ms, publisher.publish(b.messages)), ms);
        }
        const markers = await expectStable(t, obs, (p) => `publish() resolved, but a transaction is still open on ${p}: a batch was never committed.`);
        const seen = await obs.read(markers, "read_uncommitted");
        expectExactly(t, obs, seen, batches, "A read_uncommitted reader");
        for (const b of batches) {
          const records = of(seen, b.messages);
          const index = new Map(b.messages.map((m, i) => [m.value, i]));
          for (const r of records) {
            if (r.producerId === "-1") {
              t.fail(
                `Message ${describeMessage(b.messages, index.get(r.value)!)} of ${b.name} was written without a producer id: the producer was not idempotent, so a retried send could write it twice. Use a transactional (hence idempotent) producer.`,
              );
            }
            if (!r.inTransaction) {
              t.fail(
                `Message ${describeMessage(b.messages, index.get(r.value)!)} of ${b.name} was written outside any transaction (its record batch lacks the transactional flag): readers see it at once, whatever happens to the rest of the batch.`,
              );
            }
          }
          const w = writers(records);
          if (w.length > 1) {
            t.fail(`${b.name[0]!.toUpperCase()}${b.name.slice(1)} was written by ${w.length} producers (producer id/epoch ${w.join(", ")}): a single transaction, from a single producer, is what makes the batch atomic across topics.`);
          }
          // A transaction marker (commit or abort) takes an offset that no reader is shown: a
          // gap between two records of one batch on one partition is a transaction ending there.
          const byPartition = new Map<string, SeenRecord[]>();
          for (const r of records) byPartition.set(where(r.topic, r.partition), [...(byPartition.get(where(r.topic, r.partition)) ?? []), r]);
          for (const [p, rs] of byPartition) {
            rs.sort((x, y) => x.offset - y.offset);
            for (let i = 1; i < rs.length; i++) {
              if (rs[i]!.offset !== rs[i - 1]!.offset + 1) {
                const a = index.get(rs[i - 1]!.value)!;
                const z = index.get(rs[i]!.value)!;
                t.fail(
                  `On ${short(p)}, messages #${a} and #${z} of ${b.name} (${b.messages.length} messages) sit at offsets ${rs[i - 1]!.offset} and ${rs[i]!.offset}: the offset between them holds a transaction marker, so a transaction ended inside the batch. The batch was split into several transactions; a reader can see its first part without the rest.`,
                );
              }
            }
          }
        }
      },
    },
    {
      name: "while a batch is being written, read_committed readers see none of it, although its first messages are already on the broker",
      hint: "Each message must be sent (and the send awaited) before beforeSend is called for the next one, and all of them inside one open transaction until the single commit.",
      timeoutMs: 50_000,
      async run(t) {
        const { obs, publisher, env } = await arrangeOnWire(t);
        const batch = makeBatch(t, obs, t.rng.int(BIG.min, BIG.max), "the batch");
        const last = batch.length - 1;
        const held = hooksFor(batch, { holdAt: last });
        const before = endTxnCount(env);
        const timersBefore = await env.host.timers();
        let heldFor = 0;
        const publishing = settle(HELD_MS, publisher.publish(batch, held.hooks));
        try {
          await waitHeld(t, held, publishing, last, "publish()");
          const heldAt = Date.now();
          // publish() is now parked in beforeSend for the last message. The send before it was
          // answered before beforeSend was called, so from here on the learner's wire must stay
          // silent: anything written now was sent without waiting for beforeSend.
          const quietFrom = env.wire.durable.length;
          const expectQuiet = () => {
            const sent = env.wire.durable.slice(quietFrom);
            if (sent.length) {
              t.fail(
                `While beforeSend(#${last}) was still running (the grader held it), the producer sent ${[...new Set(sent)].join(", ")} requests to the broker: it went on without waiting for beforeSend. Await beforeSend(message, index) before sending that message.`,
              );
            }
          };
          await env.host.turns();
          expectQuiet();
          // Then look at the broker.
          const markers = await obs.writeMarkers();
          const [onBroker, lso] = await Promise.all([obs.read(markers, "read_uncommitted"), obs.lastStableOffsets()]);
          expectQuiet();
          if (of(onBroker, batch.slice(last)).length) {
            t.fail(
              `While beforeSend(#${last}) was still running (the grader held it), message #${last} was already on the broker: it was sent without waiting for its beforeSend. Await beforeSend(message, index) before sending that message.`,
            );
          }
          expectExactly(
            t,
            obs,
            onBroker,
            [{ name: "the batch", messages: batch.slice(0, last) }],
            `While beforeSend(#${last}) was running, a read_uncommitted reader (which sees even uncommitted writes)`,
            "each message must be sent, and its send awaited, before beforeSend is called for the next one.",
          );
          const visible = onBroker.filter((r) => (lso.get(where(r.topic, r.partition)) ?? 0) > r.offset);
          if (visible.length) {
            t.fail(
              `While the ${batch.length}-message batch was still being written (beforeSend held before its last message), read_committed readers could already see ${plural(visible.length, "message")} of it: ${listed(batch, visible)}. They were not inside an open transaction (or a transaction was committed mid-batch). Other services would act on part of a batch.`,
            );
          }
          // beforeSend stays held past every timer the learner's code set: a publish() that gives up
          // waiting for it (a timeout of its own) and sends on shows on the wire.
          heldFor = await holdPastTimers(env.host, timersBefore, heldAt, () => false, BEFORE_SEND_HOLD_MIN_MS);
          await env.host.turns();
          expectQuiet();
        } finally {
          held.release.open();
        }
        mustResolve(t, "publish() (after beforeSend for the last message returned)", await publishing, HELD_MS);
        expectOneCommit(t, env, before, `publish() of the ${batch.length}-message batch (held ${heldFor} ms in beforeSend before its last message)`);
        const markers = await expectStable(t, obs, (p) => `publish() resolved, but a transaction is still open on ${p}: the batch was never committed.`);
        expectExactly(t, obs, await obs.read(markers, "read_committed"), [{ name: "the batch", messages: batch }], "After publish() resolved, a read_committed reader");
      },
    },
    {
      name: "a failure mid-batch aborts: publish() rejects, and read_committed readers see none of the messages already sent",
      hint: "Wrap the sends in try/catch: on any error, await transaction.abort() and rethrow. Never commit after an error, and never swallow it.",
      timeoutMs: 30_000,
      async run(t) {
        const { obs, publisher } = await arrange(t);
        // One topic only: "a single topic is atomic anyway" is not true of a batch.
        const batch = makeBatch(t, obs, t.rng.int(BIG.min, BIG.max), "the failed batch", [obs.topics[1]!.name]);
        const failAt = t.rng.int(batch.length - 20, batch.length - 2);
        const failing = hooksFor(batch, { failAt });
        const result = await settle(PUBLISH_MS, publisher.publish(batch, failing.hooks));
        if (result.ok === "timeout") t.fail(`publish() did not settle within ${PUBLISH_MS} ms after beforeSend threw at message #${failAt}.`);
        if (result.ok === true) {
          t.fail(`publish() resolved although beforeSend threw at message #${failAt} of ${batch.length}: the caller believes the batch was written. Abort and rethrow the error.`);
        }
        expectCalledUpTo(t, failing, failAt, result);
        const { committed, onBroker } = await readBoth(
          t,
          obs,
          (p) =>
            `publish() rejected, but the transaction is still open on ${p}: read_committed readers of those partitions are stuck until the broker times the transaction out (a minute by default). Await transaction.abort() before rethrowing.`,
        );
        const leaked = of(committed, batch);
        if (leaked.length) {
          t.fail(
            `beforeSend threw at message #${failAt} of ${batch.length}, yet a read_committed reader sees ${plural(leaked.length, "message")} of that batch: ${listed(batch, leaked)}. Part of the batch is visible: the sends were not in one transaction, or it was committed instead of aborted.`,
          );
        }
        expectSentBefore(t, onBroker, batch, failAt, `beforeSend threw at message #${failAt}`, true);
      },
    },
    {
      name: "after an aborted batch, the same publisher publishes the next batch right away, and only that one becomes visible",
      hint: "Let the abort finish (await it) before publish() rejects, so the producer is ready for the next transaction.",
      timeoutMs: 50_000,
      async run(t) {
        const { obs, publisher, env } = await arrangeOnWire(t);
        const shipments = obs.topics[2]!.name;
        // The third fails at its very first message, before anything was sent: a transaction
        // begun must still be ended (kafkajs sends no EndTxn for it), or the next one cannot start.
        const failed = [
          makeBatch(t, obs, t.rng.int(10, 30), "the first failed batch"),
          makeBatch(t, obs, t.rng.int(10, 30), "the second failed batch", [shipments]),
          makeBatch(t, obs, t.rng.int(10, 30), "the third failed batch"),
        ];
        const ordinal = ["first", "second", "third"];
        const next = makeBatch(t, obs, t.rng.int(10, 30), "the next batch");
        for (const [k, batch] of failed.entries()) {
          const failAt = k === 2 ? 0 : t.rng.int(2, batch.length - 1);
          const failing = hooksFor(batch, { failAt });
          const what = k === 0 ? "publish()" : "The publish() right after a failed one, failing too,";
          // The first failed batch's abort is held on the wire for a moment: publish() must still be pending then.
          let abortsAtReject = -1;
          const timersBefore = k === 0 ? await env.host.timers() : [];
          const publishing = track(publisher.publish(batch, failing.hooks), () => (abortsAtReject = env.wire.answered(false)));
          const probe = k === 0 ? holdFirstEndTxn(env, false, timersBefore, () => publishing.state.settled) : null;
          const r = await settle(PUBLISH_MS + (probe ? HOLD_MS : 0), publishing.promise);
          if (r.ok === "timeout") t.fail(`${what} did not settle within ${PUBLISH_MS + (probe ? HOLD_MS : 0)} ms after beforeSend threw at message #${failAt}.`);
          if (r.ok === true) t.fail(`${what} resolved although beforeSend threw at message #${failAt}. Abort and rethrow the error.`);
          if (r.ok === false && k > 0 && failing.calls.length === 0) {
            t.fail(
              `The publish() right after a failed one rejected before calling beforeSend even once: ${errorText(r.error)}. The failed batch's transaction was still being ended (or was left open) when publish() rejected: await the abort before rethrowing.`,
            );
          }
          expectCalledUpTo(t, failing, failAt, r);
          if (probe?.whileHeld()) {
            t.fail(
              `publish() ${r.ok === true ? "resolved" : "rejected"} while the grader held its abort (the EndTxn request) on the way to the broker (for ${probe!.heldFor()}, past every timer your code had set): it did not wait for the abort's answer, so the next publish() races it. Await transaction.abort() before rethrowing, however long it takes (no timeout of your own).`,
            );
          }
          if (failAt > 0 && abortsAtReject < k + 1) {
            const late = await eventually(() => env.wire.seen(false) >= k + 1);
            t.fail(
              late
                ? `${what} rejected after beforeSend threw at message #${failAt} before the broker had answered its abort (the EndTxn request came only afterwards): the next publish() then races the abort. Await transaction.abort() before rethrowing.`
                : `${what} rejected after beforeSend threw at message #${failAt}, but no abort (EndTxn) went out on the kafka client it was given: abort the transaction, and await the abort, before rethrowing.`,
            );
          }
        }
        const second = await settle(PUBLISH_MS, publisher.publish(next));
        if (second.ok === "timeout") t.fail(`The publish() right after three failed ones did not settle within ${PUBLISH_MS} ms.`);
        if (second.ok === false) {
          t.fail(
            `The publish() right after three failed ones (the last failing at its first message, before anything was sent) rejected: ${errorText(second.error)}. A failed batch must leave the publisher ready for the next one: abort its transaction (even when nothing was sent yet) and await the abort; do not leave the transaction open.`,
          );
        }
        const markers = await expectStable(t, obs, (p) => `After the last publish() resolved, a transaction is still open on ${p}: one of the batches was neither committed nor aborted.`);
        const committed = await obs.read(markers, "read_committed");
        for (const [k, batch] of failed.entries()) {
          const leaked = of(committed, batch);
          if (leaked.length) {
            t.fail(
              `A read_committed reader sees ${plural(leaked.length, "message")} of the ${ordinal[k]} failed batch after the next batch was published: ${listed(batch, leaked)}. The failed batch was committed (maybe together with the next one) instead of aborted.`,
            );
          }
        }
        expectExactly(t, obs, committed, [{ name: "the next batch", messages: next }], "After the failed batches and the next one, a read_committed reader");
      },
    },
    {
      name: "a record the broker refuses mid-batch (too large for its topic) aborts the whole batch: publish() rejects and nothing of it is visible",
      hint: "A send that fails must abort the transaction too, not only a failure in your own code.",
      timeoutMs: 30_000,
      async run(t) {
        const { obs, publisher } = await arrange(t, [
          { base: "orders", partitions: 1 },
          { base: "payments", partitions: 3 },
          { base: "documents", partitions: 1, configs: { "max.message.bytes": "2048" } },
        ]);
        const batch = makeBatch(t, obs, t.rng.int(40, 80), "the refused batch", [obs.topics[0]!.name, obs.topics[1]!.name]);
        const refusedAt = t.rng.int(batch.length - 10, batch.length - 2);
        const documents = obs.topics[2]!.name;
        batch[refusedAt] = { topic: documents, key: `document-${t.rng.int(1, 9)}`, value: JSON.stringify({ batch: "the refused batch", n: refusedAt, scan: "x".repeat(8000) }) };
        const result = await settle(PUBLISH_MS, publisher.publish(batch));
        if (result.ok === "timeout") t.fail(`publish() did not settle within ${PUBLISH_MS} ms after the broker refused message #${refusedAt}.`);
        if (result.ok === true) {
          t.fail(`publish() resolved although the broker refused message #${refusedAt} (8 KB on a topic that allows 2 KB): the caller believes the batch was written. Abort and rethrow.`);
        }
        const { committed, onBroker } = await readBoth(
          t,
          obs,
          (p) => `publish() rejected, but the transaction is still open on ${p}: read_committed readers there are stuck until the broker times it out. Await transaction.abort() before rethrowing.`,
        );
        const leaked = of(committed, batch);
        if (leaked.length) {
          t.fail(
            `The broker refused message #${refusedAt} of ${batch.length}, yet a read_committed reader sees ${plural(leaked.length, "message")} of that batch: ${listed(batch, leaked)}. Part of the batch is visible: the batch was not one transaction, or it was committed after the error.`,
          );
        }
        expectExactly(t, obs, committed, [], "After the refused batch, a read_committed reader");
        const rejection = result.ok === false ? errorText(result.error) : "";
        expectSentBefore(t, onBroker, batch, refusedAt, `publish() rejected (${rejection}) when message #${refusedAt} was refused`, false);
      },
    },
    {
      name: "zombie fencing across processes: a publisher in another process that registers the same transactional id fences this one, whose in-flight and later batches never become visible",
      hint: "Use exactly the transactional id you are given, in every process (derive nothing from the pid or a random value), keep one producer per publisher, and treat a fenced producer as dead: reject, never re-initialise, never swallow the error.",
      timeoutMs: 40_000,
      async run(t) {
        // The grader's topics, publisher A in the first process, and a second process made
        // ready (its client built), all at once: nothing of B exists before A is paused.
        const transactionalId = t.names.transactionalId("tx");
        const [obs, envA, envB] = await Promise.all([Observer.create(t, TOPICS), t.learnerHost().then((h) => learnerEnv(t, h, true)), t.host().then((h) => learnerEnv(t, h, true))]);
        const batch = (lo: number, hi: number, tag: string) => ({ name: tag, messages: makeBatch(t, obs, t.rng.int(lo, hi), tag) });
        const aFirst = batch(2, 6, "publisher A's first batch");
        const zombie = batch(4, 8, "publisher A's interrupted batch");
        const bFirst = batch(2, 6, "publisher B's first batch");
        const aAgain = batch(2, 4, "publisher A's batch after being fenced");
        const bSecond = batch(2, 6, "publisher B's second batch");
        const bFenced = batch(2, 4, "publisher B's batch after the grader's producer took the id");
        const cFirst = batch(2, 4, "publisher C's batch (process 2, after B was fenced)");
        const holdAt = t.rng.int(1, zombie.messages.length - 1);
        const idText = JSON.stringify(transactionalId);

        // A, in the first process, commits one batch and is then paused mid-batch, as a
        // process that hung (GC pause, network partition) would be.
        const a = await newPublisher(t, envA, transactionalId, "createTransactionalPublisher() for publisher A (process 1)");
        mustResolve(t, "Publisher A's first publish()", await settle(PUBLISH_MS, a.publish(aFirst.messages)));
        const held = hooksFor(zombie.messages, { holdAt });
        const zombieResult = settle(HELD_MS, a.publish(zombie.messages, held.hooks));
        t.defer(() => held.release.open());
        await waitHeld(t, held, zombieResult, holdAt, "Publisher A's second publish()");

        // Its replacement starts in a second process with the same transactional id.
        const b = await newPublisher(t, envB, transactionalId, "createTransactionalPublisher() for publisher B (process 2)");
        mustResolve(t, "Publisher B's first publish() (while A was paused mid-batch)", await settle(PUBLISH_MS, b.publish(bFirst.messages)));
        held.release.open();
        const zombieEnd = await zombieResult;
        if (zombieEnd.ok === "timeout") t.fail(`Publisher A's interrupted publish() did not settle within ${HELD_MS} ms of its start.`);
        const aAgainEnd = await settle(PUBLISH_MS, a.publish(aAgain.messages));
        if (aAgainEnd.ok === "timeout") t.fail(`Publisher A's publish() after being fenced did not settle within ${PUBLISH_MS} ms: it must reject.`);
        const bSecondEnd = await settle(PUBLISH_MS, b.publish(bSecond.messages));

        // A third process takes the id over: the grader's own producer. B, fenced in turn, must stop.
        const g = await graderProducer(t, transactionalId);
        const gMessage: OutgoingMessage = { topic: obs.topics[0]!.name, key: "grader", value: JSON.stringify({ batch: "the grader's producer", note: transactionalId }) };
        const gTx = await g.transaction();
        await gTx.send({ topic: gMessage.topic, messages: [{ key: gMessage.key, value: gMessage.value, partition: 0 }] });
        await gTx.commit();
        const bFencedEnd = await settle(PUBLISH_MS, b.publish(bFenced.messages));
        if (bFencedEnd.ok === "timeout") t.fail(`Publisher B's publish() after the grader's producer registered the same transactional id did not settle within ${PUBLISH_MS} ms: it must reject.`);

        // A new publisher with the same id in process 2 (a component restarted in place) takes
        // the id over in turn: it registers a producer of its own and publishes.
        const c = await newPublisher(t, envB, transactionalId, "createTransactionalPublisher() for publisher C (process 2 again, after B was fenced)");
        const cEnd = await settle(PUBLISH_MS, c.publish(cFirst.messages));
        if (cEnd.ok !== true) {
          t.fail(
            `Publisher C, created in process 2 with the same transactional id after publisher B (in that process) had been fenced, could not publish: ${cEnd.ok === false ? `it rejected: ${errorText(cEnd.error)}` : `it did not settle within ${PUBLISH_MS} ms`}. Each createTransactionalPublisher() call must build and register a producer of its own (a cached producer per id, fenced, is dead for good).`,
          );
        }

        const { committed, onBroker } = await readBoth(t, obs, (p) => `After all publishers were done, a transaction was still open on ${p}.`);
        const ids = (b: Named) => producerIds(of(onBroker, b.messages)).join(", ") || "none";
        const [aId, bId, gId] = [ids(aFirst), ids(bFirst), ids({ name: "", messages: [gMessage] })];
        const distinct = `(the broker gives each transactional id one producer id: A's records carry ${aId}, B's ${bId}, the grader's producer's ${gId}). Use exactly the transactional id you are given: derive nothing from the process id, a random value or the time.`;

        // The wire says which id each publisher registered and committed under.
        for (const [who, env] of [["Publisher A (process 1)", envA], ["Publisher B or C (process 2)", envB]] as const) {
          const other = [...env.wire.ids].filter((id) => id !== transactionalId);
          if (other.length) {
            t.fail(
              `${who} was given transactional id ${idText}, but its producer named ${other.map((id) => JSON.stringify(id)).join(", ")} in its requests to the broker. Another process given the same id then never fences it ${distinct}`,
            );
          }
        }

        // How each late publish() ended, judged against what the broker shows of its batch.
        const lateOnes: [string, Settled<void>, Named, boolean][] = [
          ["Publisher A resumed after publisher B (another process) had registered the same transactional id", zombieEnd, zombie, aId === bId],
          ["Publisher A published again after publisher B had fenced it", aAgainEnd, aAgain, aId === bId],
          ["Publisher B published after the grader's own producer (a third process) had registered the same transactional id", bFencedEnd, bFenced, bId === gId],
        ];
        for (const [what, end, b, sameId] of lateOnes) {
          if (end.ok !== true) continue;
          if (of(committed, b.messages).length === 0) {
            t.fail(
              `${what}, and its publish() resolved, yet read_committed readers see none of ${b.name}: the broker did fence it (its transaction never committed), and publish() swallowed the error. A fenced publisher must reject, so its caller knows the batch was not written.`,
            );
          }
          if (sameId) {
            t.fail(
              `${what}, and its publish() resolved and became visible: the fenced publisher came back (a new producer per publish(), or re-initialising after the error), which fences its replacement in turn. A fenced producer is dead: reject from then on.`,
            );
          }
          t.fail(`${what}, and its publish() resolved and became visible: it was never fenced, because the two did not register the same transactional id ${distinct}`);
        }
        mustResolve(t, "Publisher B's second publish() (after A's last attempts)", bSecondEnd);
        for (const b of [zombie, aAgain, bFenced]) {
          const leaked = of(committed, b.messages);
          if (leaked.length) t.fail(`A read_committed reader sees ${plural(leaked.length, "message")} of ${b.name}: a fenced producer's writes must never become visible.`);
        }
        expectExactly(t, obs, committed, [aFirst, bFirst, bSecond, { name: "the grader's producer's record", messages: [gMessage] }, cFirst], "After the fencing, a read_committed reader");
        if (aId !== bId || bId !== gId) t.fail(`Publishers A and B, both given transactional id ${idText}, did not register it as given ${distinct}`);
      },
    },
    {
      name: "close() disconnects the producer: once it resolves, none of the publisher's broker connections is open",
      hint: "close() is `await producer.disconnect()`: a producer left connected keeps its sockets (and its transactional id's coordinator session) open in a process that thinks it is done.",
      timeoutMs: 20_000,
      async run(t) {
        const { obs, publisher, env } = await arrangeOnWire(t);
        const batch = makeBatch(t, obs, t.rng.int(3, 12), "the batch");
        mustResolve(t, "publish()", await settle(PUBLISH_MS, publisher.publish(batch)));
        const open = env.wire.proxy.openConnections;
        if (open === 0) t.fail("After publish() resolved, the publisher had no connection to the broker through the kafka client it was given: build the producer from that client.");
        const closed = await settle(PUBLISH_MS, publisher.close());
        if (closed.ok === false) t.fail(`close() rejected: ${errorText(closed.error)}.`);
        mustResolve(t, "close()", closed);
        // The host's sockets reach the grader's proxy through its gateway: a closed one is seen a moment later.
        if (!(await eventually(() => env.wire.proxy.openConnections === 0, 2000))) {
          t.fail(`close() resolved, but ${plural(env.wire.proxy.openConnections, "connection")} of the ${open} the publisher had open to the broker ${env.wire.proxy.openConnections === 1 ? "was" : "were"} still open 2 s later: disconnect the producer (await producer.disconnect()) in close().`);
        }
      },
    },
  ],
});
