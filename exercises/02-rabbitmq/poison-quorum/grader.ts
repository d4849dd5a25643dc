import { HostGone, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { Channel } from "amqplib";
import type { Job, PoisonQuorumSubmission } from "../../../src/contracts/poison-quorum.ts";
import {
  CALL_MS,
  Handler,
  VersionProxy,
  WireJudge,
  arrange,
  anotherProcess,
  atLeastOnceFrom,
  callDeclare,
  deliveriesOf,
  drainAll,
  graderPublish,
  idOfBody,
  judgeDeadLetterQueue,
  judgeWorkQueue,
  killedDeliveryMayBeFree,
  leaveClean,
  makeJob,
  makeSpec,
  startConsumer,
  type Call,
  type T,
  type World,
} from "./grader-util.ts";

/** How long the grader waits for the broker and the consumer to work through a few jobs (they need milliseconds). */
const FLOW_MS = 5000;
/**
 * How long the grader holds the broker's consume-ok and cancel-ok once they are at its proxy. A
 * call that awaits them cannot resolve meanwhile; one that does not resolves within a turn or two.
 */
const HOLD_MS = 150;
/** A job that takes a while: longer than any "give up on a slow handler" timer short of the default ones. */
const SLOW_MS = 2500;

/** Fails unless every handler call got exactly the job that was published, carried by a delivery on the learner's channel. */
function requireJobs(t: T, handler: Handler, published: Map<string, Job>): void {
  for (const c of handler.calls) {
    const sent = published.get(c.id);
    if (!sent) t.fail(`The handler was called with ${describeValue(c.job)}, which is not one of the jobs published (each body is JSON.stringify(job); hand the handler JSON.parse of it).`);
    if (JSON.stringify(c.job) !== JSON.stringify(sent)) t.fail(`The handler got ${describeValue(c.job)} for job ${describeValue(sent.id)}, expected ${describeValue(sent)}: pass JSON.parse of the body.`);
    if (!c.delivery) {
      t.fail(`The handler was called with job ${describeValue(c.id)}, but no delivery on the channel the grader gave consumeJobs() carried it. Consume on that channel (the grader watches it).`);
    }
  }
}

/** "delivered 3 times (tags 1, 2, 3)" from the wire. */
function timesText(n: number): string {
  return n === 1 ? "once" : n === 2 ? "twice" : `${n} times`;
}

/**
 * One wave of jobs through a running consumer: waits until every good job is done, every poison
 * job is in the dead-letter queue (or something went wrong), then judges what the wire and the
 * broker show. `ctx` opens every message.
 */
async function judgeWave(t: T, w: World, handler: Handler, judge: WireJudge, goods: Job[], poison: Job[], ctx: string): Promise<void> {
  const L = w.spec.deliveryLimit;
  let dead = 0;
  const tooMany = () => poison.find((p) => deliveriesOf(w.wire, p.id).length > L + 1) ?? goods.find((g) => handler.of(g.id).length > 1);
  await t.waitFor(
    async () => {
      if (judge.problem || tooMany() || w.host.escaped.length) return true;
      if (!goods.every((g) => handler.done(g.id) >= 1)) return false;
      dead = (await w.obs.count(w.spec.deadLetterQueue))?.messageCount ?? -1;
      // No dead-letter queue, and every poison job has had all its deliveries: nothing more will come.
      if (dead < 0 && poison.every((p) => deliveriesOf(w.wire, p.id).length >= L + 1)) return true;
      return dead >= poison.length;
    },
    {
      timeoutMs: FLOW_MS,
      intervalMs: 5,
      message: () => {
        const stuck = poison.map((p) => `${describeValue(p.id)} delivered ${timesText(deliveriesOf(w.wire, p.id).length)}`).join(", ");
        const missing = goods.filter((g) => handler.done(g.id) === 0).length;
        const dlq = dead < 0 ? `there is no dead-letter queue "${w.spec.deadLetterQueue}"` : `the dead-letter queue holds ${dead}`;
        return `${ctx} Within ${FLOW_MS / 1000} s, ${goods.length - missing} of ${goods.length} good jobs were handled and ${dlq} (expected ${poison.length}); poison: ${stuck}. Each poison job must be delivered ${L + 1} times (x-delivery-limit ${L}) and then dead-lettered by the broker.`;
      },
    },
  );
  if (w.host.escaped.length) t.fail(`${ctx} An error escaped your consumer: ${describeValue((w.host.escaped[0] as Error)?.message ?? w.host.escaped[0])}.`);
  if (judge.problem) t.fail(`${ctx} ${judge.problem}`);
  if (dead < 0 && !tooMany()) {
    t.fail(
      `${ctx} Each poison job was delivered ${L + 1} times, as x-delivery-limit ${L} says, and no more; but there is no queue "${w.spec.deadLetterQueue}", so the broker has nowhere to dead-letter it (at-most-once dead-lettering drops it; at-least-once keeps it stuck in the work queue, retrying). Declare the dead-letter queue.`,
    );
  }
  for (const p of poison) {
    const n = deliveriesOf(w.wire, p.id).length;
    if (n !== L + 1) {
      t.fail(
        `${ctx} The handler fails poison job ${describeValue(p.id)} every time; the broker delivered it ${timesText(n)} (the grader counted on the wire), expected exactly ${L + 1}: x-delivery-limit ${L} allows ${L} failed deliveries, then dead-letters it. ` +
          (n > L + 1 ? "It kept coming back: is the work queue a quorum queue with that limit, and does each failure go back with basic.reject and requeue (not an ack and a copy)?" : ""),
      );
    }
  }
  const goodOnce = goods.find((g) => handler.of(g.id).length !== 1);
  if (goodOnce) t.fail(`${ctx} Good job ${describeValue(goodOnce.id)} reached the handler ${timesText(handler.of(goodOnce.id).length)}, though the handler finished it the first time: ack it once, after the handler resolves.`);
  const dlq = await drainAll(w.obs, w.spec.deadLetterQueue);
  const want = new Map(poison.map((p) => [p.id, p]));
  for (const m of dlq) {
    const id = m.properties.messageId ?? idOfBody(m.content);
    const job = typeof id === "string" ? want.get(id) : undefined;
    if (!job) t.fail(`${ctx} The dead-letter queue holds ${describeValue(m.content.toString("utf8"), 100)}, which is not a poison job: only jobs that failed ${L + 1} times belong there.`);
    if (!m.content.equals(Buffer.from(JSON.stringify(job), "utf8"))) t.fail(`${ctx} The dead-letter queue holds poison job ${describeValue(job.id)} with the body ${describeValue(m.content.toString("utf8"), 100)}: the broker dead-letters the message as it is; don't republish a changed copy.`);
    want.delete(job.id);
  }
  if (want.size) t.fail(`${ctx} After its ${L + 1} deliveries, poison job ${describeValue([...want.keys()][0])} is not in the dead-letter queue (it holds ${dlq.length} message(s)).`);
  const left = await w.obs.count(w.spec.queue);
  if (left && left.messageCount !== 0) t.fail(`${ctx} When every good job was done and the poison in the dead-letter queue, the work queue still held ${left.messageCount} ready message(s).`);
}

export default defineGrader<PoisonQuorumSubmission>({
  exports: { declarePoisonQueue: "function", consumeJobs: "function" },
  // One learner host for the grading (a fresh one after a check that fails); the crash check
  // makes processes of its own. A check that passes leaves no consumer running in the host.
  shareLearnerHost: true,
  checks: [
    {
      name: "declarePoisonQueue makes a quorum queue with x-delivery-limit and a dead-letter route to a durable dead-letter queue",
      hint: "x-queue-type, x-delivery-limit, x-dead-letter-exchange and x-dead-letter-routing-key go in assertQueue's `arguments` (or its deadLetterExchange / deadLetterRoutingKey options). Declare the dead-letter queue too: a route to nowhere drops the poison.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, t.rng.int(1, 9));
        await callDeclare(t, w.host, w.ch, w.spec);
        const dlq = await judgeDeadLetterQueue(w.obs, w.spec);
        if (dlq) t.fail(dlq);
        const work = await judgeWorkQueue(w.obs, w.spec, w.version, "", t.amqpUrl);
        if (work) t.fail(`${work} (spec: ${describeValue(w.spec)}; the broker is RabbitMQ ${w.version}.)`);
        // Every process start declares again: that must keep what is queued, in both queues.
        const queued = [makeJob(t.rng, "good", 1), makeJob(t.rng, "good", 2)].slice(0, t.rng.int(1, 2));
        await graderPublish(w.gch, w.spec.queue, queued);
        await graderPublish(w.gch, w.spec.deadLetterQueue, [makeJob(t.rng, "poison", 1)]);
        await callDeclare(t, w.host, w.ch, w.spec, "declarePoisonQueue() (second call)");
        const [q, d] = await Promise.all([w.obs.count(w.spec.queue), w.obs.count(w.spec.deadLetterQueue)]);
        if (q?.messageCount !== queued.length || d?.messageCount !== 1) {
          t.fail(`The grader queued ${queued.length} job(s) and put 1 in the dead-letter queue, then called declarePoisonQueue() again; the queues then held ${q?.messageCount ?? "nothing"} and ${d?.messageCount ?? "nothing"}. Declaring again must not delete or purge them.`);
        }
      },
    },
    {
      name: "declarePoisonQueue reads the broker's version: at-least-once dead-lettering from 3.10 on, 4.x included, and never before",
      hint: "ch.connection.serverProperties.version is a string like \"3.13.7\" or \"4.1.0-rc.1\": take major and minor as numbers. \"3.9\" > \"3.10\" as strings, and parseFloat(\"3.10.8\") is 3.1.",
      timeoutMs: 10000,
      async run(t: T) {
        const host = await t.learnerHost();
        const w = await arrange(t, t.rng.int(2, 6));
        const target = (() => {
          const u = new URL(t.amqpUrl);
          return { host: u.hostname || "127.0.0.1", port: Number(u.port || 5672) };
        })();
        // Every run: one version before 3.10, 3.10.0 itself, a later 3.x, and two 4.x (one a
        // release candidate); the seed picks which. The broker behind is the real one.
        const versions = [
          t.rng.pick(["3.8.35", "3.9.29"]),
          "3.10.0",
          t.rng.pick(["3.11.28", "3.12.14", "3.13.7"]),
          t.rng.pick(["4.0.9", "4.1.0-rc.1"]),
          t.rng.pick(["4.2.3", "4.3.1"]),
        ];
        const problems = await Promise.all(
          versions.map(async (version, i) => {
            const vp = await VersionProxy.start(target, version);
            t.defer(() => vp.close());
            const ch = await host.cap<Channel>("amqp.channel", { url: vp.urlFor(t.amqpUrl) });
            const spec = { ...makeSpec(t, w.spec.deliveryLimit), queue: `${w.spec.queue}.v${i}`, deadLetterQueue: `${w.spec.deadLetterQueue}.v${i}` };
            await callDeclare(t, host, ch, spec, `declarePoisonQueue() on a broker that says it is ${version}`);
            return judgeWorkQueue(w.obs, spec, version, `declared on a connection whose server properties say version "${version}"`);
          }),
        );
        const wrong = problems.findIndex((p) => p !== null);
        if (wrong >= 0) {
          const v = versions[wrong]!;
          t.fail(`${problems[wrong]} (${atLeastOnceFrom(v) ? `${v} has at-least-once dead-lettering` : `${v} predates at-least-once dead-lettering`}; the grader presented versions ${versions.join(", ")}.)`);
        }
      },
    },
    {
      name: "a poison message is dead-lettered after exactly deliveryLimit + 1 deliveries, and the good messages around it are handled once each",
      hint: "Nack or reject the failed delivery with requeue and let the broker count: with x-delivery-limit L a message that always fails is delivered L + 1 times, then dead-lettered. Use ch.reject(msg, true): from RabbitMQ 4.3 on, a nack with requeue does not count.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t, t.rng.int(2, 4));
        const L = w.spec.deliveryLimit;
        await callDeclare(t, w.host, w.ch, w.spec);
        // First wave: two poison jobs among good ones, one near the front; queued before consuming.
        const goods = Array.from({ length: t.rng.int(4, 7) }, (_, i) => makeJob(t.rng, "good", i));
        const poison = [makeJob(t.rng, "poison", 1), makeJob(t.rng, "poison", 2)];
        const wave = [...goods];
        wave.splice(t.rng.int(0, 1), 0, poison[0]!);
        wave.splice(t.rng.int(3, wave.length), 0, poison[1]!);
        // Second wave, published while a third poison job is being handled for the second time:
        // faults after the steady state, and good jobs arriving while the poison cycles.
        const goods2 = Array.from({ length: t.rng.int(3, 5) }, (_, i) => makeJob(t.rng, "good", 100 + i));
        const poison2 = [makeJob(t.rng, "poison", 3)];
        const poisonIds = new Set([...poison, ...poison2].map((p) => p.id));
        const published = new Map([...wave, ...goods2, ...poison2].map((j) => [j.id, j]));
        let second: Promise<void> | null = null;
        const handler = new Handler(
          w.wire,
          (call: Call) => {
            if (call.id === poison2[0]!.id && call.nth === 2) second ??= graderPublish(w.gch, w.spec.queue, t.rng.shuffle(goods2));
            return poisonIds.has(call.id) ? "fail" : "ok";
          },
          { rng: t.rng },
        );
        const judge = new WireJudge(w.wire, handler);
        await graderPublish(w.gch, w.spec.queue, wave);
        const consumer = await startConsumer(t, w.host, w.ch, w.spec.queue, handler);
        const ctx1 = `With x-delivery-limit ${L}, the grader queued ${wave.length} jobs, ${poison.length} of them poison (the handler fails them every time).`;
        await judgeWave(t, w, handler, judge, goods, poison, ctx1);
        requireJobs(t, handler, published);
        await graderPublish(w.gch, w.spec.queue, poison2);
        const ctx2 = `${ctx1} After those were through, it queued poison job ${describeValue(poison2[0]!.id)}, and ${goods2.length} good jobs while it was handled the second time.`;
        await judgeWave(t, w, handler, judge, goods2, poison2, ctx2);
        if (!second) t.fail(`${ctx2} The handler was never called a second time for it.`);
        await second;
        requireJobs(t, handler, published);
        await leaveClean(t, w, consumer);
      },
    },
    {
      name: "a message that fails fewer times than the limit allows is handled once and never dead-lettered",
      hint: "A failure is not poison yet: give the delivery back with requeue every time (ch.reject(msg, true)), never without requeue on the first failure, never only once. The broker decides when the limit is spent.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrange(t, t.rng.int(2, 4));
        const L = w.spec.deliveryLimit;
        await callDeclare(t, w.host, w.ch, w.spec);
        const jobs = Array.from({ length: t.rng.int(5, 7) }, (_, i) => makeJob(t.rng, "flaky", i));
        // Every run: one job fails once, one L times (its last allowed failure: it succeeds on the
        // final delivery), one a number in between when there is one. The seed picks which jobs.
        // And one job takes a while (SLOW_MS) and then succeeds: it is not a failure.
        const [a, b, c, slow] = t.rng.shuffle(jobs);
        const failures = new Map([
          [a!.id, 1],
          [b!.id, L],
          [c!.id, t.rng.int(1, L)],
        ]);
        const handler = new Handler(w.wire, (call) => (call.nth <= (failures.get(call.id) ?? 0) ? "fail" : call.id === slow!.id ? "slow" : "ok"), { rng: t.rng, slowMs: SLOW_MS });
        const judge = new WireJudge(w.wire, handler);
        const published = new Map(jobs.map((j) => [j.id, j]));
        await graderPublish(w.gch, w.spec.queue, jobs);
        const consumer = await startConsumer(t, w.host, w.ch, w.spec.queue, handler);
        const plan = [...failures].map(([id, f]) => `${describeValue(id)} ${timesText(f)}`).join(", ");
        const ctx = `With x-delivery-limit ${L}, the handler failed ${plan}, then succeeded, and took ${SLOW_MS / 1000} s over ${describeValue(slow!.id)} before it succeeded.`;
        const ok = await handler.until(() => judge.problem !== null || jobs.every((j) => handler.done(j.id) >= 1) || w.host.escaped.length > 0, FLOW_MS);
        if (judge.problem) t.fail(`${ctx} ${judge.problem}`);
        if (!ok) {
          const dead = (await w.obs.count(w.spec.deadLetterQueue))?.messageCount ?? 0;
          const missing = jobs.filter((j) => handler.done(j.id) === 0).map((j) => `${describeValue(j.id)}: ${handler.of(j.id).length} call(s)`);
          t.fail(`${ctx} Within ${FLOW_MS / 1000} s these were never handled successfully: ${missing.join(", ")}; the dead-letter queue holds ${dead}. A job that fails must come back until the broker's limit is spent.`);
        }
        requireJobs(t, handler, published);
        for (const j of jobs) {
          const want = (failures.get(j.id) ?? 0) + 1;
          if (handler.of(j.id).length !== want) t.fail(`${ctx} Job ${describeValue(j.id)} reached the handler ${timesText(handler.of(j.id).length)}, expected ${want}: each failure brings it back once, and a success ends it.`);
        }
        const dead = await drainAll(w.obs, w.spec.deadLetterQueue);
        if (dead.length) t.fail(`${ctx} The dead-letter queue holds ${describeValue(dead.map((m) => m.properties.messageId ?? m.content.toString("utf8")))}: none of these jobs spent its ${L} allowed failures.`);
        await leaveClean(t, w, consumer);
      },
    },
    {
      name: "consumeJobs() resolves once the consumer is registered, and stop() once it is cancelled",
      hint: "Await ch.consume(...) before consumeJobs() resolves; it gives a consumerTag, and stop() awaits ch.cancel(consumerTag).",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t, t.rng.int(2, 5));
        await callDeclare(t, w.host, w.ch, w.spec);
        const handler = new Handler(w.wire, () => "ok", { rng: t.rng });
        const judge = new WireJudge(w.wire, handler);
        // The grader holds the broker's basic.consume-ok for a while (longer than any timeout of yours should be).
        const isConsumeOk = (f: { type: number; classId: number | null; methodId: number | null }) => f.type === 1 && f.classId === 60 && f.methodId === 21;
        const isCancelOk = (f: { type: number; classId: number | null; methodId: number | null }) => f.type === 1 && f.classId === 60 && f.methodId === 31;
        w.proxy.hold("toClient", isConsumeOk);
        let resolved = false;
        const starting = startConsumer(t, w.host, w.ch, w.spec.queue, handler);
        starting.then(
          () => void (resolved = true),
          () => void (resolved = true),
        );
        // From the moment the consume-ok is held at the proxy, the learner has HOLD_MS to resolve too early.
        await handler.until(() => w.proxy.heldCount > 0 || resolved, 3000);
        await new Promise((r) => setTimeout(r, HOLD_MS));
        await w.host.turns();
        if (resolved) {
          w.proxy.release();
          t.fail(`consumeJobs() resolved while the broker's basic.consume-ok was still held by the grader (for ${HOLD_MS} ms): it did not wait for the consumer to be registered. Await ch.consume(...).`);
        }
        w.proxy.release();
        const consumer = await starting;
        const qos = w.wire.qos.filter((q) => !q.afterConsume);
        const limit = qos.at(-1)?.method.prefetchCount ?? 0;
        if (w.wire.consumes.some((c) => c.method.noAck)) t.fail(`Your consumer subscribed with noAck: true: a failed job could never go back to be counted.`);
        if (limit < 1 || limit > 50) {
          t.fail(`Before basic.consume your channel set ${qos.length ? `a prefetch of ${limit}` : "no prefetch (basic.qos)"}: set one from 1 to 50 with ch.prefetch(n) before consuming, so the broker keeps the backlog.`);
        }
        const jobs = Array.from({ length: t.rng.int(1, 3) }, (_, i) => makeJob(t.rng, "good", i));
        await graderPublish(w.gch, w.spec.queue, jobs);
        if (!(await handler.until(() => jobs.every((j) => handler.done(j.id) >= 1) && w.wire.outstanding().length === 0, 3000))) {
          t.fail(`With ${jobs.length} job(s) queued, the handler finished ${handler.calls.filter((c) => c.state === "done").length} and ${w.wire.outstanding().length} deliveries stayed unacked within 3 s.`);
        }
        if (judge.problem) t.fail(judge.problem);
        // stop() may resolve only once the broker has confirmed the cancel.
        w.proxy.hold("toClient", isCancelOk);
        let stopped = false;
        const stopping = consumer.stop().then(() => void (stopped = true));
        stopping.catch(() => {});
        await handler.until(() => w.proxy.heldCount > 0 || w.wire.closes.some((c) => c.by === "client") || stopped, 3000);
        await new Promise((r) => setTimeout(r, HOLD_MS));
        await w.host.turns();
        const closedChannel = w.wire.closes.some((c) => c.by === "client");
        if (stopped && !closedChannel) {
          w.proxy.release();
          if (w.wire.cancels.length === 0) t.fail(`stop() resolved, but no basic.cancel (nor a channel close) crossed your channel: the broker would keep delivering to a service that is shutting down.`);
          t.fail(`stop() resolved while the broker's basic.cancel-ok was still held by the grader: it did not wait for the cancel to be confirmed. Await ch.cancel(consumerTag).`);
        }
        w.proxy.release();
        await t.within("stop()", CALL_MS, stopping);
        const after = await w.obs.count(w.spec.queue);
        if (after?.consumerCount !== 0) t.fail(`After stop() resolved, the queue still has ${after?.consumerCount} consumer(s).`);
        const late = [makeJob(t.rng, "good", 50)];
        const calls = handler.calls.length;
        await graderPublish(w.gch, w.spec.queue, late);
        await w.host.turns();
        const ready = (await w.obs.count(w.spec.queue))?.messageCount ?? 0;
        if (handler.calls.length !== calls || ready !== late.length) {
          t.fail(`After stop() resolved the grader queued a job; the handler was then called ${handler.calls.length - calls} more time(s) and ${ready} stayed queued. A stopped consumer takes nothing.`);
        }
      },
    },
    {
      name: "the delivery count is the broker's: after a SIGKILL and a restart in a new process, the poison message is dead-lettered at the same limit",
      hint: "Keep no count of your own (a restarted process starts from zero): the quorum queue counts every failed delivery, a crash's included, and dead-letters at x-delivery-limit whoever consumes.",
      timeoutMs: 15000,
      async run(t: T) {
        // The shared learner host is the first process (this check comes last: nothing needs it after).
        const first = await t.learnerHost();
        const w = await arrange(t, t.rng.int(3, 5), { host: first });
        const L = w.spec.deliveryLimit;
        // The process dies while the handler works on the poison job's k-th delivery.
        const k = t.rng.int(2, L);
        const goods = Array.from({ length: t.rng.int(4, 6) }, (_, i) => makeJob(t.rng, "good", i));
        const poison = makeJob(t.rng, "poison", 1);
        const jobs = [...goods];
        jobs.splice(t.rng.int(0, 2), 0, poison);
        let killed = false;
        const handler = new Handler(w.wire, (call) => (call.id !== poison.id ? "ok" : call.nth === k && call.process === 1 ? "kill" : "fail"), {
          rng: t.rng,
          onKill: async () => {
            killed = true;
            await first.kill();
          },
        });
        const judge = new WireJudge(w.wire, handler);
        // A service start: declare, then consume.
        await callDeclare(t, first, w.ch, w.spec);
        await graderPublish(w.gch, w.spec.queue, jobs);
        try {
          await startConsumer(t, first, w.ch, w.spec.queue, handler);
        } catch (e) {
          if (!(e instanceof HostGone)) throw e;
        }
        const ctx = `With x-delivery-limit ${L}, the grader SIGKILLed your consumer's process while the handler worked on poison job ${describeValue(poison.id)} for the ${k}${k === 2 ? "nd" : k === 3 ? "rd" : "th"} time`;
        if (!(await handler.until(() => killed || judge.problem !== null, FLOW_MS))) {
          t.fail(`${ctx}, but within ${FLOW_MS / 1000} s the handler got it only ${timesText(handler.of(poison.id).length)}.`);
        }
        if (judge.problem) t.fail(`${ctx}. Before that: ${judge.problem}`);
        await first.exited;
        await t.waitFor(async () => (await w.obs.count(w.spec.queue))?.consumerCount === 0, { timeoutMs: 3000, intervalMs: 5, message: `${ctx}; 3 s later the queue still had a consumer. Consume only on the channel you are given.` });
        const before = deliveriesOf(w.wire, poison.id).length;
        // What the dead process held unsettled goes back to the queue: those may be handled again.
        const inFlight = new Set(w.wire.deliveries.filter((d) => d.settled === null || d.settled.how === "closed").map((d) => d.messageId));
        // The restart: a new process declares and consumes, as the service would.
        handler.process = 2;
        const again = await anotherProcess(t, w);
        const next: World = { ...w, host: again.host, ch: again.ch };
        await callDeclare(t, again.host, again.ch, w.spec, "declarePoisonQueue() in the restarted process");
        const consumer = await startConsumer(t, again.host, again.ch, w.spec.queue, handler);
        let dead = 0;
        await t.waitFor(
          async () => {
            if (judge.problem || deliveriesOf(w.wire, poison.id).length > L + 2 || again.host.escaped.length) return true;
            if (!goods.every((g) => handler.done(g.id) >= 1)) return false;
            dead = (await w.obs.count(w.spec.deadLetterQueue))?.messageCount ?? -1;
            return dead >= 1;
          },
          {
            timeoutMs: FLOW_MS,
            intervalMs: 5,
            message: () =>
              `${ctx}, and restarted it. Within ${FLOW_MS / 1000} s, ${goods.filter((g) => handler.done(g.id) >= 1).length} of ${goods.length} good jobs were handled and the dead-letter queue held ${Math.max(0, dead)}; the poison job was delivered ${timesText(before)} before the crash and ${timesText(deliveriesOf(w.wire, poison.id).length - before)} after.`,
          },
        );
        if (judge.problem) t.fail(`${ctx}, and restarted it. ${judge.problem}`);
        const total = deliveriesOf(w.wire, poison.id).length;
        const allowed = killedDeliveryMayBeFree(w.version) ? [L + 1, L + 2] : [L + 1];
        if (!allowed.includes(total)) {
          t.fail(
            `${ctx} (its delivery ${k}, which the crash left unsettled, counts as a failed one), and restarted it. The poison job was delivered ${timesText(before)} before the crash and ${timesText(total - before)} after: ${total} in all, expected ${allowed.join(" or ")}. ` +
              (total > L + 1 ? "The restarted process counted from zero: the broker's count (x-delivery-limit on a quorum queue) is the one that survives a crash." : ""),
          );
        }
        const dlq = await drainAll(w.obs, w.spec.deadLetterQueue);
        if (dlq.length !== 1 || (dlq[0]!.properties.messageId ?? idOfBody(dlq[0]!.content)) !== poison.id) {
          t.fail(`${ctx}, and restarted it. The dead-letter queue then held ${describeValue(dlq.map((m) => m.properties.messageId ?? m.content.toString("utf8")))}, expected only the poison job.`);
        }
        for (const g of goods) {
          const n = handler.of(g.id).length;
          if (n > 1 && !inFlight.has(g.id)) t.fail(`${ctx}, and restarted it. Good job ${describeValue(g.id)} reached the handler ${timesText(n)}, though it was not in flight at the crash.`);
        }
        await leaveClean(t, next, consumer);
      },
    },
  ],
});
