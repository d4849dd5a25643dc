import { LabError, amqpCode, brokerText, defineGrader, describeValue, firstCommitWhere } from "../../../src/kit/index.ts";
import type { Delivery } from "../../../src/kit/index.ts";
import { MAX_PREFETCH, type AtLeastOnceConsumerSubmission } from "../../../src/contracts/at-least-once-consumer.ts";
import {
  SETTLE_MS,
  World,
  drip,
  fail,
  finish,
  isCheckFailure,
  launch,
  leftovers,
  lookAlikeIds,
  makePayments,
  prepareRun,
  reserialized,
  startRun,
  verifyLedger,
  verifyQueueEmpty,
  waitNoConsumer,
  waitSettled,
  wireSettle,
  type EffectCall,
  type Run,
  type T,
} from "./grader-util.ts";

// ---------------------------------------------------------------- the crash scenario

/**
 * Where process 1 is SIGKILLed. Every point is exact: the host is blocked in a synchronous call
 * into the grader (applyPayment's before or after), the ack is held on the grader's proxy, never
 * forwarded, or (after-commit) the restart gets the database cut right after the commit.
 */
type Point = "effect-start" | "effect-written" | "after-commit" | "before-ack";

/** How long the transaction holding payment k's row may take to commit, once applyPayment has written it. */
const COMMIT_MS = 5000;

/**
 * The crash right after the transaction that holds the row of process 1's k-th applyPayment
 * commits. The ledger's WAL is pinned (World.create with pin), so every commit to the database
 * file stays in it, in order, whoever made it. From the moment the row is written (after()),
 * nothing process 1 sends reaches the broker: every frame is held at its proxy and dropped with
 * the host. Once the row is visible on the grader's connection (checked every few ms, and at
 * each applyPayment call, where the host is blocked), the host is killed. `cut()` then finds the
 * end of the first commit frame holding that row, where the restart's crash image is cut:
 * nothing process 1 wrote after that commit survives, to whatever table, through whatever
 * connection to the file.
 */
function armAfterCommit(world: World, first: Run, k: number): { cut: () => number } {
  const t = world.t;
  const pin = world.ledger.pin;
  if (!pin) throw new LabError("grader bug: the after-commit crash needs a pinned ledger");
  let victim: EffectCall | undefined;
  let rowsBefore = 0;
  let walBefore = 0;
  let armedAt = 0;
  let timer: NodeJS.Timeout | undefined;
  const committed = () => victim !== undefined && world.ledger.count(victim.id) > rowsBefore;
  /** Kills process 1 once the row is committed; true when it is (being) killed. */
  const maybeKill = (): boolean => {
    if (first.killed) return true;
    if (!victim) return false;
    if (committed()) {
      clearInterval(timer);
      void first.kill();
      return true;
    }
    if (performance.now() - armedAt > COMMIT_MS) {
      clearInterval(timer);
      world.violate(
        `applyPayment wrote the ledger row of payment #${k} (${describeValue(victim.id)}) in ${first.name}, and ${COMMIT_MS / 1000} s later its transaction had still not committed (the grader's connection does not see the row). Commit the transaction holding the effect and the record of its id right away.${first.whatItDid()}`,
      );
      void first.kill();
      return true;
    }
    return false;
  };
  world.plan.before = (call, run) => {
    if (run !== first) return;
    // Process 1 is blocked in applyPayment for a later payment: if the row is committed, it dies here.
    if (maybeKill()) return "kill";
    if (call.n === k) {
      // The commit that holds the row comes after this point in the WAL (an applyPayment outside
      // any transaction commits before after() is even called).
      rowsBefore = world.ledger.count(call.id);
      walBefore = pin.walSize();
    }
  };
  world.plan.after = async (call, run) => {
    if (run !== first || call.n !== k) return;
    // What process 1 wrote to its socket before this call reaches the proxy and goes on; from
    // here on, nothing it sends reaches the broker (held, then dropped with the host).
    await wireSettle();
    first.proxy.hold("toBroker", () => true);
    victim = call;
    armedAt = performance.now();
    if (maybeKill()) return "kill";
    timer = setInterval(maybeKill, 2);
    t.defer(() => clearInterval(timer));
  };
  return {
    cut: () => {
      const v = victim;
      if (!v) throw new LabError("grader bug: a crash image without a victim");
      const end = firstCommitWhere(world.ledger.path, {
        after: walBefore,
        scratchDir: t.tmpDir,
        holds: (db) => (db.prepare("SELECT count(*) AS n FROM ledger WHERE message_id = ?").get(v.id) as { n: number }).n > rowsBefore,
      });
      if (end === undefined) throw new LabError(`grader bug: payment #${k}'s row was seen committed, and no commit in the WAL holds it`);
      return end;
    },
  };
}

/**
 * Publishes 10 payments, runs the consumer until it is SIGKILLed at `point` on payment k,
 * restarts it (a second process, on the crash image of the first one's database), lets it
 * finish, and judges the ledger, the queue and the wire. For "effect-start" and "before-ack" the grader
 * hands the deliveries over one at a time, so the crash lands after the learner has reacted
 * (acked, on the wire) to every payment before k, while the broker has already sent the ones
 * after it.
 */
async function crashAndRestart(t: T, point: Point): Promise<void> {
  const k = t.rng.int(2, 6);
  const sent = makePayments(t.rng, 10, "");
  const ids = sent.map((m) => m.id);
  const cut = point === "after-commit";
  const world = await World.create(t, { pin: cut });
  // The restart's process, prepared meanwhile: its database, the crash image, is made once
  // process 1 is dead, and its consumer starts after that.
  const afterEffect = point === "effect-written" || point === "after-commit";
  let crashed!: (walBytes: number | undefined) => void;
  const restart = new Promise<number | undefined>((r) => (crashed = r));
  const firstP = startRun(world, { declare: true, afterEffect, drip: point === "effect-start" || point === "before-ack" });
  // Asked for second, so numbered 2; awaited after the crash.
  const secondP = prepareRun(world, { afterEffect, restart });
  secondP.catch(() => {});
  const first = await firstP;
  let crashText = "";
  let target: string | undefined;
  let afterCommit: ReturnType<typeof armAfterCommit> | undefined;
  switch (point) {
    case "effect-start":
      crashText = `during applyPayment for payment #${k}, before it wrote anything`;
      world.plan.before = (call, run) => (run === first && call.id === target ? "kill" : undefined);
      break;
    case "effect-written":
      crashText = `inside applyPayment call #${k}, right after its ledger row was written (before your code got control back)`;
      world.plan.after = (call, run) => (run === first && call.n === k ? "kill" : undefined);
      break;
    case "after-commit":
      afterCommit = armAfterCommit(world, first, k);
      crashText = `right after the transaction holding payment #${k}'s ledger row committed (the restart got the database as it was at that commit: nothing your process wrote afterwards, to any table, and nothing it sent the broker after that payment's applyPayment, survived)`;
      break;
    case "before-ack": {
      crashText = `in the ack that settles payment #${k}, after its payment was handled and before the ack reached the broker`;
      const gate = first.proxy.stopAt("toBroker", (f) => f.link === first.link && first.wire.settledBy(f).some((d) => d.settled?.how === "ack" && d.settled.frame === f) && first.ackedCount() >= k);
      gate.onStop(() => void first.kill());
      break;
    }
  }
  await world.publish(sent);

  // Process 1 must reach the crash point. If it handles everything without getting there, say so.
  if (first.dripGate) {
    await drip(first, sent.length, (j, d) => {
      if (j === k) target = d.messageId;
    });
  } else {
    await world.until(
      () => first.killed || (cut && ids.every((id) => world.ledger.committed(id))),
      SETTLE_MS,
      () => `The grader meant to crash your consumer ${crashText}, but in ${SETTLE_MS / 1000} s it made only ${world.calls.length} applyPayment call(s) for ${ids.length} payments.${first.whatItDid()}${first.tail()}`,
    );
  }
  if (!first.killed) {
    const did = point === "before-ack" ? `acked only ${first.ackedCount()} of the ${ids.length} payments` : `made only ${world.calls.length} applyPayment call(s)`;
    fail(
      `The grader meant to crash your consumer ${crashText}, but it ${did}.` +
        (point === "before-ack" ? " Each message must be acked (manual acks, noAck: false) once its payment is committed." : " Each new payment must go through applyPayment, inside your transaction.") +
        first.whatItDid(),
    );
  }
  await first.host.exited;
  const left = leftovers(t);
  if (left.length) {
    fail(
      `When process 1 was killed, the grading's shared folder held ${left.slice(0, 3).map((f) => describeValue(f)).join(", ")}${left.length > 3 ? `, … (${left.length} in all)` : ""}: your consumer keeps state outside deps.db. ` +
        "A second database or file commits on its own, never together with the payment, so a crash between the two leaves one without the other. Keep the record of processed ids in tables of deps.db.",
    );
  }
  // The restart's database: everything process 1 committed, or what it had at the cut.
  crashed(afterCommit?.cut());
  const second = await secondP;

  const runName = (n: number) => (n === 1 ? "process 1 (the one killed)" : "process 2 (the restart)");
  try {
    await waitNoConsumer(world, "After process 1 was killed");
    await launch(second);
    await waitSettled(second, ids, `After the crash ${crashText} and a restart`);
    await finish(second);
    verifyLedger(world, sent, runName);
    await verifyQueueEmpty(world);
  } catch (e) {
    if (isCheckFailure(e)) fail(`The consumer was SIGKILLed ${crashText}, then restarted. ${(e as Error).message}`);
    throw e;
  }
}

// ---------------------------------------------------------------- checks

/** Queue arguments under which the broker itself drops waiting payments, and how. */
const LOSSY_ARGS: Record<string, string> = {
  "x-message-ttl": "A payment that waits longer than that in the queue (a consumer outage, a backlog) is discarded by the broker, never applied.",
  "x-expires": "The broker deletes the whole queue, with every payment in it, once it has had no consumer for that long.",
  "x-max-length": "Once that many payments wait, the broker drops the oldest (or refuses new ones).",
  "x-max-length-bytes": "Once that many bytes of payments wait, the broker drops the oldest (or refuses new ones).",
  "x-delivery-limit": "A payment redelivered that many times is dropped (or dead-lettered) instead of being tried again.",
};

export default defineGrader<AtLeastOnceConsumerSubmission>({
  exports: { declareQueue: "function", startConsumer: "function" },
  // Checks share nothing (a queue, a folder, hosts and proxies of their own) and wait on events.
  concurrency: 3,
  checks: [
    {
      name: "declareQueue makes a durable queue that outlives its consumers",
      hint: "Look at assertQueue's options: durable keeps the queue across a broker restart; exclusive and autoDelete tie its life to a connection or a consumer.",
      timeoutMs: 15000,
      async run(t: T) {
        const world = await World.create(t);
        const [host, proxy] = await Promise.all([t.host(), t.proxy()]);
        await world.declare(host, proxy);
        // Re-declaring with durable, non-exclusive, non-auto-delete settings succeeds only if they
        // match; the broker's 406 names the first one that differs (durable, then auto_delete).
        // Then each queue argument in turn: the broker's 406 names one and its value, the next
        // probe echoes it, until the declaration matches. Arguments that let the broker drop a
        // waiting payment fail; the others (x-queue-type quorum, a dead-letter exchange) are fine.
        const args: Record<string, unknown> = {};
        for (let round = 0; round < 12; round++) {
          const probe = await world.obs.throwaway();
          try {
            await probe.assertQueue(world.queue, { durable: true, exclusive: false, autoDelete: false, arguments: args });
            await probe.close().catch(() => {});
            break;
          } catch (e) {
            if (amqpCode(e) !== 406) throw e;
            const said = brokerText(e);
            const arg = /inequivalent arg '([^']+)'/.exec(said)?.[1];
            if (arg === "durable") fail(`The queue is not durable (the broker says: ${said}). A broker restart deletes a non-durable queue, and every payment waiting in it, persistent or not.`);
            if (arg === "auto_delete") fail(`The queue is auto-delete (the broker says: ${said}). It is deleted when its last consumer goes away, so a consumer crash takes the waiting payments with it.`);
            const value = /current is the value '(.*)' of type '(\w+)'/.exec(said);
            if (arg && value && arg in LOSSY_ARGS) {
              fail(`The queue was declared with the argument ${arg} = ${value[1]} (the grader re-declared it and the broker said: ${said}). ${LOSSY_ARGS[arg]} Declare it without ${arg}: no payment may leave the queue unapplied.`);
            }
            if (!arg || !value || arg in args) break;
            const [, text, type] = value;
            const echo = type === "longstr" ? text : type === "bool" ? text === "true" : Number(text);
            if (typeof echo === "number" && Number.isNaN(echo)) break;
            args[arg] = echo;
          }
        }
        await world.publish(makePayments(t.rng, 1, "d"));
        try {
          await world.declare(host, proxy, "declareQueue() (second call)");
        } catch (e) {
          if (isCheckFailure(e)) fail(`Calling declareQueue() a second time for the same queue failed: ${(e as Error).message} Every consumer start declares the queue; it must be repeatable.`);
          throw e;
        }
        const after = await world.obs.count(world.queue);
        if (after?.messageCount !== 1) {
          fail(`The grader queued 1 payment, then called declareQueue() again; the queue then held ${after ? after.messageCount : "nothing (it is gone)"}. Declaring must not delete or purge the queue.`);
        }
        // The service that declared it goes away (SIGKILL): the queue and its payment must stay.
        await host.kill();
        await world.until(() => proxy.brokerConnections === 0, 5000, () => "The broker did not notice within 5 s that the declaring process was gone.");
        let left: { messageCount: number } | null = null;
        try {
          left = await world.obs.count(world.queue);
        } catch (e) {
          if (amqpCode(e) !== 405) throw e;
        }
        if (left?.messageCount !== 1) {
          fail(`When the process that called declareQueue() died, the queue ${left ? `held ${left.messageCount} messages instead of 1` : "was deleted with its connection"}: it is exclusive to that connection. A payments queue must outlive every consumer.`);
        }
      },
    },
    {
      name: `at most ${MAX_PREFETCH} payments are in flight (delivered, not yet acked)`,
      hint: "The broker keeps sending to a consumer until the prefetch limit of unacked messages is reached, and with no limit (or noAck) it sends everything. Call ch.prefetch(n) before ch.consume().",
      timeoutMs: 20000,
      async run(t: T) {
        // Every ack, nack and reject is held at the proxy: the broker sees nothing settled.
        const world = await World.create(t);
        const run = await startRun(world, { declare: true, holdSettlements: true });
        let consumers = 0;
        await world.until(
          async () => (consumers = (await world.obs.count(world.queue))?.consumerCount ?? 0) > 0,
          2000,
          () => `startConsumer() resolved, but 2 s later the queue has no consumer: resolve once ch.consume() has resolved, and consume the queue you are given.`,
        );
        const total = 60;
        await world.publish(makePayments(t.rng, total, "p"));
        // Once the publishes are confirmed the queue has decided what it hands the consumer; the
        // count holds still once the deliveries have crossed the proxy.
        let inFlight = 0;
        let seen = 0;
        let steadySince = 0;
        await world
          .until(
            async () => {
              const q = await world.obs.count(world.queue);
              const now = total - (q?.messageCount ?? total);
              seen = run.deliveries().length;
              const same = now === inFlight && seen === now && now > 0;
              if (!same) steadySince = Date.now();
              inFlight = now;
              // The broker's count and the wire agree, and have for a while (a quorum queue hands out a little later).
              return same && Date.now() - steadySince >= 100;
            },
            5000,
            () => "",
          )
          .catch((e: unknown) => {
            if (!isCheckFailure(e) || world.violation) throw e;
            if (inFlight === 0) fail(`With ${total} payments queued and your consumer registered, none was delivered to it within 5 s.${run.whatItDid()}`);
            if (seen < inFlight) fail(`${inFlight} payments left the queue but only ${seen} crossed the channel you were given: consume on deps.channel.${run.whatItDid()}`);
            fail(`With ${total} payments queued and none of them acked, the number in flight never settled within 5 s (last seen: ${inFlight}).${run.whatItDid()}`);
          });
        if (inFlight > MAX_PREFETCH) {
          const w = run.wire;
          const qos = w.qos.filter((q) => q.link === run.link);
          const said = qos.length
            ? `It sent basic.qos with prefetch-count ${qos.map((q) => `${q.method.prefetchCount}${q.afterConsume ? " (after basic.consume, so not for that consumer)" : ""}`).join(", then ")}.`
            : "It never sent basic.qos (ch.prefetch).";
          fail(
            `With every ack your consumer sent held back at the grader's proxy (the broker saw none), ${inFlight} of ${total} payments left the queue for it (at most ${MAX_PREFETCH} may be in flight). ${said} ` +
              "Without a prefetch limit (or with one set after consume, or too large) the broker pushes the whole backlog into one process: a crash there puts it all back, and no other consumer can help.",
          );
        }
        world.assertClean();
      },
    },
    {
      name: "a clean run applies every payment once, acks it, and stop() cancels the consumer",
      hint: "Identify a message by its messageId property, not by its body: two payments can carry the same body. stop() cancels the consumer by its consumerTag.",
      timeoutMs: 25000,
      async run(t: T) {
        const world = await World.create(t);
        const run = await startRun(world, { declare: true });
        const sent = makePayments(t.rng, 15, "c");
        // Three payments repeat another's body exactly: same account, same amount, new message id.
        t.rng.shuffle([0, 1, 2, 3, 4, 5]).slice(0, 3).forEach((from, i) => (sent[12 + i]!.payment = { ...sent[from]!.payment }));
        // And payments of their own whose ids differ from another's only in case, a trailing space or a `_`.
        const base = sent[t.rng.int(6, 11)]!.id;
        const alikes = makePayments(t.rng, 3, "c").map((m, i) => ({ ...m, id: lookAlikeIds(base)[i]! })).filter((m) => m.id !== undefined);
        sent.push(...alikes);
        await world.publish(t.rng.shuffle(sent));
        await waitSettled(
          run,
          sent.map((m) => m.id),
          `With ${sent.length} payments queued (3 of them with the same body as another; ${alikes.map((m) => describeValue(m.id)).join(", ")} with ids that look like ${describeValue(base)} but are not it)`,
        );
        let consumersAfterStop = -1;
        await finish(run, async () => {
          consumersAfterStop = (await world.obs.count(world.queue))?.consumerCount ?? 0;
        });
        verifyLedger(world, sent, () => "your consumer");
        await verifyQueueEmpty(world);
        if (consumersAfterStop !== 0) {
          fail(`After stop() resolved (with the connection still open), the queue still had ${consumersAfterStop} consumer(s): the broker would keep delivering to a service that is shutting down.`);
        }
        world.assertClean();
      },
    },
    {
      name: "a payment published twice with the same message id is applied once, even across a restart",
      hint: "A producer that retries after a lost confirm publishes the same message again. Keep the processed message ids in the database, not in memory, and check them for every message, not only redelivered ones.",
      timeoutMs: 30000,
      async run(t: T) {
        const world = await World.create(t);
        let stopped!: () => void;
        const restart = new Promise<undefined>((r) => (stopped = () => r(undefined)));
        const run1P = startRun(world, { declare: true });
        // Prepared meanwhile; its database is process 1's, once process 1 is gone.
        const run2P = prepareRun(world, { restart });
        run2P.catch(() => {});
        const run1 = await run1P;
        const first = makePayments(t.rng, 8, "a");
        const dupNow = t.rng.shuffle(first).slice(0, 2);
        // The copies follow their originals at random places in the stream.
        const batch1 = [...first];
        // One copy as it was, one rebuilt by the producer (the same payment, serialized another way).
        dupNow.forEach((d, i) => batch1.splice(t.rng.int(batch1.indexOf(d) + 1, batch1.length), 0, i === 0 ? d : reserialized(t.rng, d)));
        const frame = (msg: string) =>
          `The grader published ${dupNow.map((m) => describeValue(m.id)).join(" and ")} twice to process 1${msg ? `, and ${msg}` : ""} (the copies with the same messageId, some with the same payment serialized another way: key order or spacing). `;
        let later = "";
        try {
          await world.publish(batch1);
          await waitSettled(run1, first.map((m) => m.id), `With ${first.length} payments queued, 2 of them published twice`);
          await finish(run1);
          // The service restarts; meanwhile the producer retried three old payments and sent new ones.
          const fresh = makePayments(t.rng, 3, "b");
          const dupLater = t.rng.shuffle(first.filter((m) => !dupNow.includes(m))).slice(0, 3);
          later = `${dupLater.map((m) => describeValue(m.id)).join(", ")} again after a restart`;
          await world.publish(t.rng.shuffle([...fresh, ...dupLater.map((m) => reserialized(t.rng, m))]));
          await run1.host.exited;
          stopped();
          await waitNoConsumer(world, "After process 1 stopped");
          const run2 = await run2P;
          await launch(run2);
          const all = [...first, ...fresh];
          await waitSettled(run2, all.map((m) => m.id), "After a restart, with 3 new payments and 3 old ones published again");
          await finish(run2);
          verifyLedger(world, all, (n) => (n === 1 ? "process 1" : "process 2 (after a clean restart)"));
          await verifyQueueEmpty(world);
        } catch (e) {
          if (isCheckFailure(e)) fail(frame(later) + (e as Error).message);
          throw e;
        }
      },
    },
    {
      name: "a payment published again after 300 others is still applied once",
      hint: "A duplicate can arrive long after the original (a producer retrying after an outage). Keep the record of every processed message id; do not prune it to the last N ids.",
      timeoutMs: 40000,
      async run(t: T) {
        const world = await World.create(t);
        const run = await startRun(world, { declare: true });
        const sent = makePayments(t.rng, 305, "r");
        // Three of the first five come back after every other payment (300 or more) has been applied.
        const again = t.rng.shuffle(sent.slice(0, 5)).slice(0, 3);
        await world.publish(sent);
        await waitSettled(run, sent.map((m) => m.id), `With ${sent.length} payments queued`);
        await world.publish(again);
        try {
          await waitSettled(run, sent.map((m) => m.id), `Then, with ${again.length} of the first payments published again`);
          await finish(run);
          verifyLedger(world, sent, () => "your consumer");
          await verifyQueueEmpty(world);
        } catch (e) {
          if (isCheckFailure(e)) fail(`After applying ${sent.length} payments, the grader published ${again.map((m) => describeValue(m.id)).join(", ")} again (${sent.length - 5} or more payments after their first delivery). ${(e as Error).message}`);
          throw e;
        }
      },
    },
    {
      name: "a crash before a payment is applied loses nothing",
      hint: "Ack only after the work is committed, and only the messages whose work is committed: ackAll() and ack(msg, true) also ack deliveries you have received but not handled. A dedup record committed before the effect says 'done' too early.",
      timeoutMs: 40000,
      async run(t: T) {
        await crashAndRestart(t, "effect-start");
      },
    },
    {
      name: "a crash in the middle of applying a payment leaves no half-done work",
      hint: "Record the message id and call applyPayment inside ONE transaction (db.transaction(...)): a crash before the commit must leave neither behind.",
      timeoutMs: 40000,
      async run(t: T) {
        await crashAndRestart(t, "effect-written");
      },
    },
    {
      name: "a crash right after a payment's ledger row commits does not apply it twice",
      hint: "The payment and the record of its message id must commit together, in ONE transaction: committed in two, a crash between the two commits leaves a payment applied but not recorded, and the redelivery applies it again.",
      timeoutMs: 40000,
      async run(t: T) {
        await crashAndRestart(t, "after-commit");
      },
    },
    {
      name: "a crash after a payment commits, before its ack, does not apply it twice",
      hint: "The broker redelivers what was never acked, so a restarted consumer sees that payment again. It must find the message id already recorded in the database, skip the effect, and ack.",
      timeoutMs: 40000,
      async run(t: T) {
        await crashAndRestart(t, "before-ack");
      },
    },
    {
      name: "a payment whose transaction fails is tried again, never acked or dropped",
      hint: "Ack only after db.transaction(...)() has returned: the COMMIT itself can fail, after your function ran. When the transaction throws, nothing was committed: nack with requeue so the broker delivers the message again, as often as it takes. Do not retry in-process while later messages are acked with allUpTo.",
      timeoutMs: 25000,
      async run(t: T) {
        const sent = makePayments(t.rng, 8, "f");
        // Neither the first nor the last: payments come after both.
        const [throws, breaks] = t.rng.shuffle(sent.slice(1, -1)).map((m) => m.id) as [string, string];
        const world = await World.create(t);
        const run = await startRun(world, { declare: true });
        /** Whether a delivery that reached the consumer after `throws` first did has been acked or nacked. */
        const laterSettled = (): boolean => {
          const ds = run.deliveries();
          const firstA = ds.find((d: Delivery) => d.messageId === throws);
          return !!firstA && ds.some((d) => d.index > firstA.index && d.messageId !== throws && d.settled !== null && d.settled.how !== "closed");
        };
        let throwsCount = 0;
        // More failures than any "poison after N tries" limit a learner might pick (and fewer than
        // a quorum queue's default delivery limit of 20, which a valid design may use).
        const minThrows = t.rng.int(8, 11);
        const maxThrows = minThrows + 4;
        world.plan.before = async (call) => {
          if (call.id === throws) {
            // minThrows times in any case; then as long as nothing delivered after it has been
            // settled (up to maxThrows attempts), so a consumer that keeps it open while it acks
            // later payments (with allUpTo) shows that on the wire.
            if (call.attempt > minThrows && call.attempt <= maxThrows) await wireSettle();
            if (call.attempt <= minThrows || (call.attempt < maxThrows && !laterSettled())) {
              throwsCount++;
              return "throw";
            }
            return;
          }
          if (call.id === breaks && call.attempt <= 3) return "break-commit";
        };
        await world.publish(sent);
        const what = () => `applyPayment threw for ${describeValue(throws)} on its first ${throwsCount} attempt(s) (the ledger was briefly unavailable), and the COMMIT of the transaction for ${describeValue(breaks)} failed on its first 3 attempts (a deferred constraint)`;
        try {
          await waitSettled(run, sent.map((m) => m.id), `${what()}; then`);
          await finish(run);
          verifyLedger(world, sent, () => "your consumer");
          await verifyQueueEmpty(world);
        } catch (e) {
          if (isCheckFailure(e) && world.violation && (e as Error).message === world.violation) fail(`${what()}. ${world.violation}`);
          throw e;
        }
      },
    },
  ],
});
