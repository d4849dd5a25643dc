import { defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext } from "../../../src/kit/index.ts";
import type {
  CreateTransactionalPublisher,
  OutgoingMessage,
  PublishHooks,
  TransactionalPublisher,
} from "../../../src/contracts/transactional-producer.ts";
import { Observer, gate, settle, type SeenRecord, type Settled } from "./grader-util.ts";

type Submission = { createTransactionalPublisher: CreateTransactionalPublisher };
type T = CheckContext<Submission>;

/** Three topics, one of them with two partitions: a batch spans topics and partitions. */
const TOPICS = [
  { base: "orders", partitions: 1 },
  { base: "payments", partitions: 2 },
  { base: "shipments", partitions: 1 },
];

const PUBLISH_MS = 10_000;
/** Commit and abort markers land a moment after commit()/abort() return. */
const STABLE_MS = 8_000;
/** For a publish() the grader holds inside beforeSend while it looks at the broker. */
const HELD_MS = 2 * PUBLISH_MS;

class InjectedFailure extends Error {
  override name = "InjectedFailure";
}

const short = (topic: string): string => topic.slice(topic.lastIndexOf(".") + 1);
const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * A batch of `n` messages whose first messages cover every topic in shuffled order, so any
 * prefix of two or more messages already spans two topics. Values are unique per batch.
 */
function makeBatch(t: T, obs: Observer, n: number, tag: string): OutgoingMessage[] {
  const topics = t.rng.shuffle(obs.topics.map((x) => x.name));
  return Array.from({ length: n }, (_, i) => {
    const topic = i < topics.length ? topics[i]! : t.rng.pick(topics);
    return {
      topic,
      key: `${short(topic).slice(0, -1)}-${t.rng.int(1, 9)}`,
      value: JSON.stringify({ batch: tag, n: i, amount: t.rng.int(1, 99_999) / 100, note: "größe ✓" }),
    };
  });
}

function describeMessage(batch: OutgoingMessage[], index: number): string {
  const m = batch[index]!;
  return `#${index} (${short(m.topic)}, key "${m.key}")`;
}

async function newPublisher(t: T, transactionalId: string, who = "createTransactionalPublisher()"): Promise<TransactionalPublisher> {
  // More retries than the kit's default: a new producer for a transactional id whose previous
  // owner has a transaction open gets CONCURRENT_TRANSACTIONS until the broker has aborted it.
  const kafka = await t.kafka.client({ retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
  const publisher = await t.within(who, PUBLISH_MS, t.submission.createTransactionalPublisher(kafka, transactionalId));
  if (!publisher || typeof publisher.publish !== "function" || typeof publisher.close !== "function") {
    t.fail(`${who} resolved to ${describeValue(publisher)}; it must resolve to an object with publish() and close().`);
  }
  t.defer(() => publisher.close());
  return publisher;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return describeValue(e);
}

/** Fails unless the learner's publish() resolved; rethrows its error as the learner's. */
function mustResolve(t: T, what: string, result: Settled<void>, ms = PUBLISH_MS): void {
  if (result.ok === "timeout") t.fail(`${what} did not settle within ${ms} ms.`);
  if (result.ok === false) throw result.error;
}

/**
 * Compares what a reader saw with exactly the messages expected: each once, on its topic, with
 * its key and value, and in batch order within each partition. Nothing else may show up.
 */
function expectExactly(
  t: T,
  seen: SeenRecord[],
  batches: { name: string; messages: OutgoingMessage[] }[],
  who: string,
  whyMissing = "every message of a committed batch must be visible.",
): void {
  const expected = new Map<string, { batch: string; index: number; message: OutgoingMessage; order: number }>();
  let order = 0;
  for (const b of batches) b.messages.forEach((message, index) => expected.set(message.value, { batch: b.name, index, message, order: order++ }));
  const count = new Map<string, number>();
  for (const r of seen) {
    const e = expected.get(r.value);
    if (!e) t.fail(`${who} saw a record nobody published in this check: ${describeValue(r.value)} on ${short(r.topic)}[${r.partition}].`);
    const n = (count.get(r.value) ?? 0) + 1;
    count.set(r.value, n);
    if (n === 2) t.fail(`${who} saw message #${e.index} of ${e.batch} (${short(e.message.topic)}, key "${e.message.key}") twice: a batch must be written exactly once.`);
    if (r.topic !== e.message.topic) t.fail(`${who} found message #${e.index} of ${e.batch} on ${short(r.topic)}, but it was addressed to ${short(e.message.topic)}.`);
    if (r.key !== e.message.key) t.fail(`${who} saw message #${e.index} of ${e.batch} with key ${describeValue(r.key)}; it was published with key "${e.message.key}". Keep the key: it picks the partition.`);
  }
  for (const e of expected.values()) {
    if (!count.has(e.message.value)) {
      t.fail(`${who} never saw message #${e.index} of ${e.batch} (${short(e.message.topic)}, key "${e.message.key}"): ${whyMissing}`);
    }
  }
  const lastOrder = new Map<string, number>();
  for (const r of [...seen].sort((a, b) => a.offset - b.offset)) {
    const p = `${r.topic}[${r.partition}]`;
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

/**
 * The aborted writes stay in the log: a read_uncommitted reader shows that the messages before
 * the failure did reach the broker (so it is the abort that hides them from read_committed),
 * and, with `nothingAfter`, that nothing was sent once the batch had failed.
 */
function expectSentBefore(t: T, onBroker: SeenRecord[], batch: OutgoingMessage[], failedAt: number, what: string, nothingAfter: boolean): void {
  for (let i = 0; i < batch.length; i++) {
    const onLog = onBroker.some((r) => r.value === batch[i]!.value);
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

/**
 * Fails unless beforeSend was called for 0..index, in order, before publish() gave up. (What
 * comes after, such as a retry of the whole batch that fails the same way, is not judged here.)
 */
function expectCalledUpTo(t: T, calls: number[], index: number, result: Settled<void>): void {
  const inOrder = calls.length >= index + 1 && calls.slice(0, index + 1).every((c, i) => c === i);
  if (inOrder) return;
  const why = result.ok === false ? ` It rejected with: ${errorText(result.error)}.` : "";
  t.fail(`publish() called beforeSend for indexes [${calls.join(", ")}] before it settled; it must call it once per message, in order, up to the failing message #${index}.${why}`);
}

/** Hooks that record each call and can fail or hold at one index. */
function hooksFor(opts: { failAt?: number; holdAt?: number }) {
  const calls: number[] = [];
  const reached = gate();
  const release = gate();
  const hooks: PublishHooks = {
    async beforeSend(_message, index) {
      calls.push(index);
      if (index === opts.failAt) throw new InjectedFailure(`beforeSend failed on purpose at message #${index} (the grader's simulated failure)`);
      if (index === opts.holdAt) {
        reached.open();
        await release.promise;
      }
    },
  };
  return { hooks, calls, reached, release };
}

/** Waits until the held hook is reached; fails if publish() settles first or never gets there. */
async function waitHeld(t: T, held: ReturnType<typeof hooksFor>, publishing: Promise<Settled<void>>, index: number, who: string): Promise<void> {
  const first = await Promise.race([
    held.reached.promise.then(() => "held" as const),
    publishing.then((r) => r),
  ]);
  if (first === "held") {
    const inOrder = held.calls.every((c, i) => c === i) && held.calls.length === index + 1;
    if (!inOrder) t.fail(`${who} called beforeSend for indexes [${held.calls.join(", ")}]; it must call it once per message, in order (0, 1, 2, ...).`);
    return;
  }
  if (first.ok === "timeout") t.fail(`${who} never called beforeSend for message #${index} within ${HELD_MS} ms (calls so far: [${held.calls.join(", ")}]).`);
  if (first.ok === false) t.fail(`${who} rejected before calling beforeSend for message #${index}: ${errorText(first.error)}`);
  t.fail(`${who} resolved without calling beforeSend for message #${index} (calls: [${held.calls.join(", ")}]): call it before sending each message.`);
}

export default defineGrader<Submission>({
  exports: { createTransactionalPublisher: "function" },
  checks: [
    {
      name: "committed batches across several topics reach read_committed readers: every message once, in order, keys and values intact",
      hint: "Start one transaction per publish(), send every message through it (awaiting each send), then await the commit.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const first = makeBatch(t, obs, t.rng.int(5, 8), "the first batch");
        const second = makeBatch(t, obs, t.rng.int(3, 5), "the second batch");
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        mustResolve(t, "publish()", await settle(PUBLISH_MS, publisher.publish(first)));
        const next = await settle(PUBLISH_MS, publisher.publish(second));
        if (next.ok === false) {
          t.fail(
            `The second publish(), called as soon as the first one resolved, rejected: ${errorText(next.error)}. publish() must resolve only once its transaction is committed (await the commit), leaving the publisher ready for the next batch.`,
          );
        }
        mustResolve(t, "The second publish()", next);
        const markers = await expectStable(
          t,
          obs,
          (p) => `Both publish() calls resolved, but a transaction is still open on ${p}: a batch was never committed, so read_committed readers cannot see it.`,
        );
        expectExactly(
          t,
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
      name: "each batch is written inside a transaction by one idempotent producer (every record carries its producer id and the transactional flag)",
      hint: "Give kafkajs the transactionalId and idempotent: true, and send through the transaction object, not through producer.send().",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const batch = makeBatch(t, obs, t.rng.int(4, 6), "batch");
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        mustResolve(t, "publish()", await settle(PUBLISH_MS, publisher.publish(batch)));
        const markers = await expectStable(t, obs, (p) => `publish() resolved, but a transaction is still open on ${p}: the batch was never committed.`);
        const seen = await obs.read(markers, "read_uncommitted");
        expectExactly(t, seen, [{ name: "the batch", messages: batch }], "A read_uncommitted reader");
        for (const r of seen) {
          const index = batch.findIndex((m) => m.value === r.value);
          if (r.producerId === "-1") {
            t.fail(`Message ${describeMessage(batch, index)} was written without a producer id: the producer was not idempotent, so a retried send could write it twice. Use a transactional (hence idempotent) producer.`);
          }
          if (!r.inTransaction) {
            t.fail(`Message ${describeMessage(batch, index)} was written outside any transaction (its record batch lacks the transactional flag): readers see it at once, whatever happens to the rest of the batch.`);
          }
        }
        const writers = new Set(seen.map((r) => `${r.producerId}/${r.producerEpoch}`));
        if (writers.size > 1) {
          t.fail(`One batch was written by ${writers.size} producers (producer id/epoch ${[...writers].join(", ")}): a single transaction, from a single producer, is what makes the batch atomic across topics.`);
        }
      },
    },
    {
      name: "while a batch is being written, read_committed readers see none of it, although its first messages are already on the broker",
      hint: "Each message must be sent (and the send awaited) before beforeSend is called for the next one, and all of them inside one open transaction until commit.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const batch = makeBatch(t, obs, t.rng.int(4, 6), "the batch");
        const last = batch.length - 1;
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        const held = hooksFor({ holdAt: last });
        const publishing = settle(HELD_MS, publisher.publish(batch, held.hooks));
        try {
          await waitHeld(t, held, publishing, last, "publish()");
          // publish() is now parked in beforeSend for the last message: look at the broker.
          const markers = await obs.writeMarkers();
          const [onBroker, lso] = await Promise.all([obs.read(markers, "read_uncommitted"), obs.lastStableOffsets()]);
          expectExactly(
            t,
            onBroker,
            [{ name: "the batch", messages: batch.slice(0, last) }],
            `While beforeSend(#${last}) was running, a read_uncommitted reader (which sees even uncommitted writes)`,
            "each message must be sent, and its send awaited, before beforeSend is called for the next one.",
          );
          for (const r of onBroker) {
            const stable = lso.get(`${r.topic}[${r.partition}]`) ?? 0;
            if (stable > r.offset) {
              const index = batch.findIndex((m) => m.value === r.value);
              t.fail(
                `While the batch was still being written (beforeSend held before its last message), a read_committed reader could already see message ${describeMessage(batch, index)} on ${short(r.topic)}[${r.partition}]: it was not inside an open transaction. Other services would act on half a batch.`,
              );
            }
          }
        } finally {
          held.release.open();
        }
        mustResolve(t, "publish() (after beforeSend for the last message returned)", await publishing, HELD_MS);
        const markers = await expectStable(t, obs, (p) => `publish() resolved, but a transaction is still open on ${p}: the batch was never committed.`);
        expectExactly(t, await obs.read(markers, "read_committed"), [{ name: "the batch", messages: batch }], "After publish() resolved, a read_committed reader");
      },
    },
    {
      name: "a failure mid-batch aborts: publish() rejects, and read_committed readers see none of the messages already sent",
      hint: "Wrap the sends in try/catch: on any error, await transaction.abort() and rethrow. Never commit after an error, and never swallow it.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const batch = makeBatch(t, obs, t.rng.int(5, 7), "the failed batch");
        const failAt = t.rng.int(2, batch.length - 2);
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        const failing = hooksFor({ failAt });
        const result = await settle(PUBLISH_MS, publisher.publish(batch, failing.hooks));
        if (result.ok === "timeout") t.fail(`publish() did not settle within ${PUBLISH_MS} ms after beforeSend threw at message #${failAt}.`);
        if (result.ok === true) {
          t.fail(`publish() resolved although beforeSend threw at message #${failAt}: the caller believes the batch was written. Abort and rethrow the error.`);
        }
        expectCalledUpTo(t, failing.calls, failAt, result);
        const markers = await expectStable(
          t,
          obs,
          (p) =>
            `publish() rejected, but the transaction is still open on ${p}: read_committed readers of those partitions are stuck until the broker times the transaction out (a minute by default). Await transaction.abort() before rethrowing.`,
        );
        const [committed, onBroker] = await Promise.all([obs.read(markers, "read_committed"), obs.read(markers, "read_uncommitted")]);
        const leaked = committed.filter((r) => batch.some((m) => m.value === r.value));
        if (leaked.length) {
          const list = leaked.map((r) => describeMessage(batch, batch.findIndex((m) => m.value === r.value))).join(", ");
          t.fail(
            `beforeSend threw at message #${failAt}, yet a read_committed reader sees ${plural(leaked.length, "message")} of that batch: ${list}. Partial writes are visible: the sends were not in a transaction, or it was committed instead of aborted.`,
          );
        }
        expectSentBefore(t, onBroker, batch, failAt, `beforeSend threw at message #${failAt}`, true);
      },
    },
    {
      name: "after an aborted batch, the same publisher publishes the next batch right away, and only that one becomes visible",
      hint: "Let the abort finish (await it) before publish() rejects, so the producer is ready for the next transaction.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const failed = makeBatch(t, obs, t.rng.int(4, 6), "the failed batch");
        const next = makeBatch(t, obs, t.rng.int(3, 5), "the next batch");
        const failAt = t.rng.int(2, failed.length - 1);
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        const failing = hooksFor({ failAt });
        const first = await settle(PUBLISH_MS, publisher.publish(failed, failing.hooks));
        if (first.ok === "timeout") t.fail(`publish() did not settle within ${PUBLISH_MS} ms after beforeSend threw at message #${failAt}.`);
        if (first.ok === true) t.fail(`publish() resolved although beforeSend threw at message #${failAt}. Abort and rethrow the error.`);
        expectCalledUpTo(t, failing.calls, failAt, first);
        const second = await settle(PUBLISH_MS, publisher.publish(next));
        if (second.ok === "timeout") t.fail(`The publish() right after a failed one did not settle within ${PUBLISH_MS} ms.`);
        if (second.ok === false) {
          t.fail(
            `The publish() right after a failed one rejected: ${errorText(second.error)}. An aborted batch must leave the publisher ready for the next one (await the abort; do not leave the transaction open).`,
          );
        }
        const markers = await expectStable(t, obs, (p) => `After the second publish() resolved, a transaction is still open on ${p}: one of the two batches was neither committed nor aborted.`);
        const committed = await obs.read(markers, "read_committed");
        const leaked = committed.filter((r) => failed.some((m) => m.value === r.value));
        if (leaked.length) {
          t.fail(`A read_committed reader sees ${plural(leaked.length, "message")} of the failed batch after the next batch was published: the failed batch was committed (maybe together with the next one) instead of aborted.`);
        }
        expectExactly(t, committed, [{ name: "the next batch", messages: next }], "After the failed batch and the next one, a read_committed reader");
      },
    },
    {
      name: "a record the broker refuses mid-batch (too large for its topic) aborts the whole batch: publish() rejects and nothing of it is visible",
      hint: "A send that fails must abort the transaction too, not only a failure in your own code.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, [
          { base: "orders", partitions: 1 },
          { base: "payments", partitions: 2 },
          { base: "documents", partitions: 1, configs: { "max.message.bytes": "2048" } },
        ]);
        const batch = makeBatch(t, obs, t.rng.int(5, 7), "the refused batch");
        const refusedAt = t.rng.int(2, batch.length - 2);
        const documents = obs.topics[2]!.name;
        batch[refusedAt] = { topic: documents, key: `document-${t.rng.int(1, 9)}`, value: JSON.stringify({ batch: "the refused batch", n: refusedAt, scan: "x".repeat(8000) }) };
        const publisher = await newPublisher(t, t.names.transactionalId("tx"));
        const result = await settle(PUBLISH_MS, publisher.publish(batch));
        if (result.ok === "timeout") t.fail(`publish() did not settle within ${PUBLISH_MS} ms after the broker refused message #${refusedAt}.`);
        if (result.ok === true) {
          t.fail(`publish() resolved although the broker refused message #${refusedAt} (8 KB on a topic that allows 2 KB): the caller believes the batch was written. Abort and rethrow.`);
        }
        const markers = await expectStable(
          t,
          obs,
          (p) => `publish() rejected, but the transaction is still open on ${p}: read_committed readers there are stuck until the broker times it out. Await transaction.abort() before rethrowing.`,
        );
        const [committed, onBroker] = await Promise.all([obs.read(markers, "read_committed"), obs.read(markers, "read_uncommitted")]);
        const leaked = committed.filter((r) => batch.some((m) => m.value === r.value));
        if (leaked.length) {
          const list = leaked.map((r) => describeMessage(batch, batch.findIndex((m) => m.value === r.value))).join(", ");
          t.fail(`The broker refused message #${refusedAt}, yet a read_committed reader sees ${plural(leaked.length, "message")} of that batch: ${list}. Partial writes are visible: the batch was not one transaction, or it was committed after the error.`);
        }
        expectExactly(t, committed, [], "After the refused batch, a read_committed reader");
        const rejection = result.ok === false ? errorText(result.error) : "";
        expectSentBefore(t, onBroker, batch, refusedAt, `publish() rejected (${rejection}) when message #${refusedAt} was refused`, false);
      },
    },
    {
      name: "zombie fencing: a second publisher with the same transactional id fences the first, whose batches never become visible, while the second's do",
      hint: "Use exactly the transactional id you are given (never a random one), keep one producer per publisher, and treat a fenced producer as dead: reject, never re-initialise.",
      timeoutMs: 30_000,
      async run(t) {
        const obs = await Observer.create(t, TOPICS);
        const transactionalId = t.names.transactionalId("tx");
        const beforeB = makeBatch(t, obs, t.rng.int(2, 4), "publisher A's first batch");
        const zombie = makeBatch(t, obs, t.rng.int(3, 5), "publisher A's interrupted batch");
        const fromB = makeBatch(t, obs, t.rng.int(2, 4), "publisher B's first batch");
        const afterFence = makeBatch(t, obs, t.rng.int(2, 3), "publisher A's batch after being fenced");
        const fromBAgain = makeBatch(t, obs, t.rng.int(2, 4), "publisher B's second batch");
        const holdAt = t.rng.int(1, zombie.length - 1);

        const a = await newPublisher(t, transactionalId, "createTransactionalPublisher() for publisher A");
        mustResolve(t, "Publisher A's first publish()", await settle(PUBLISH_MS, a.publish(beforeB)));

        // A is paused mid-batch, as a process that hung (GC pause, network partition) would be.
        const held = hooksFor({ holdAt });
        const zombieResult = settle(HELD_MS, a.publish(zombie, held.hooks));
        t.defer(() => held.release.open());
        await waitHeld(t, held, zombieResult, holdAt, "Publisher A's second publish()");

        // Its replacement starts with the same transactional id.
        const b = await newPublisher(t, transactionalId, "createTransactionalPublisher() for publisher B");
        mustResolve(t, "Publisher B's first publish() (while A was paused mid-batch)", await settle(PUBLISH_MS, b.publish(fromB)));

        held.release.open();
        const zombieEnd = await zombieResult;
        if (zombieEnd.ok === "timeout") t.fail(`Publisher A's interrupted publish() did not settle within ${HELD_MS} ms of its start.`);
        if (zombieEnd.ok === true) {
          t.fail(
            `Publisher A resumed after publisher B had started with the same transactional id, and its publish() resolved: A was not fenced. Two live producers for one transactional id means a stale instance can still commit (use exactly the transactional id you are given).`,
          );
        }

        const again = await settle(PUBLISH_MS, a.publish(afterFence));
        if (again.ok === "timeout") t.fail(`Publisher A's publish() after being fenced did not settle within ${PUBLISH_MS} ms: it must reject.`);
        if (again.ok === true) {
          t.fail(
            `Publisher A published again after publisher B had fenced it, and it worked: a fenced publisher came back (a new producer per publish(), or re-initialising after the error), which fences B in turn. A fenced producer is dead: reject from then on.`,
          );
        }
        mustResolve(t, "Publisher B's second publish()", await settle(PUBLISH_MS, b.publish(fromBAgain)));

        const markers = await expectStable(t, obs, (p) => `After both publishers were done, a transaction was still open on ${p}.`);
        const committed = await obs.read(markers, "read_committed");
        for (const [name, batch] of [["interrupted batch", zombie], ["batch after being fenced", afterFence]] as const) {
          const leaked = committed.filter((r) => batch.some((m) => m.value === r.value));
          if (leaked.length) t.fail(`A read_committed reader sees ${plural(leaked.length, "message")} of publisher A's ${name}: a fenced producer's writes must never become visible.`);
        }
        expectExactly(
          t,
          committed,
          [
            { name: "publisher A's first batch", messages: beforeB },
            { name: "publisher B's first batch", messages: fromB },
            { name: "publisher B's second batch", messages: fromBAgain },
          ],
          "After the fencing, a read_committed reader",
        );
      },
    },
  ],
});
