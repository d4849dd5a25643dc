import type { GetMessage } from "amqplib";
import { amqpCode, brokerText, decodeContentHeader, decodeMethod, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { RetryDlqSubmission } from "../../../src/contracts/retry-dlq-consumer.ts";
import { CALL_MS, TTL_TOLERANCE_MS, World, errText, headerCount, history, makeMsgs, ms, sleep, type Msg, type Run, type T } from "./grader-util.ts";

/** After the expected end state, the grader watches this much longer than the TTL: nothing more may happen. */
const QUIET_EXTRA_MS = 150;
/** How long the broker's confirm of a retry copy is held while the original must stay unacked. */
const HOLD_MS = 1500;
/** While a poison message waits in the retry queue, a good message must be handled within this. */
const GOOD_MS = 250;

/** A budget for a flow of `retries` TTL waits, on a loaded machine. */
const budget = (retries: number, ttl: number) => retries * (ttl + 150) + 3000;

function describeEnd(w: World, msgs: Msg[]): string {
  return msgs.map((m) => `${describeValue(m.id)}: ${history(w, m.id)}`).join("; ") + (w.unsettledText() ? `;${w.unsettledText().replace(/\.$/, "")}` : "");
}

/** How long the broker's basic.cancel-ok is held while stop() must stay pending. */
const CANCEL_HOLD_MS = 300;

/**
 * Fails unless the consumer stops: stop() resolves only once the broker's basic.cancel-ok (held
 * for a while at the proxy) has reached it, or once its channel or connection is closed, and the
 * broker then shows no consumer on the queue.
 */
async function stopCleanly(t: T, w: World, run: Run): Promise<void> {
  const method = (f: { type: number; classId: number | null; methodId: number | null }, c: number, m: number) => f.type === 1 && f.classId === c && f.methodId === m;
  let cancelSent = false;
  let closeSent = false;
  w.proxy.tap("toBroker", (f) => {
    if (method(f, 60, 30)) cancelSent = true;
    if (method(f, 20, 40) || method(f, 10, 50)) closeSent = true;
  });
  w.proxy.hold("toClient", (f) => method(f, 60, 31));
  let stopped = false;
  const stopping = run.consumer!.stop();
  stopping.then(
    () => void (stopped = true),
    () => void (stopped = true),
  );
  const until = performance.now() + 3000;
  while (w.proxy.heldCount === 0 && !closeSent && !stopped && performance.now() < until) await sleep(5);
  await sleep(CANCEL_HOLD_MS);
  await run.host.turns();
  const early = stopped && cancelSent && !closeSent;
  w.proxy.release();
  if (early) t.fail(`stop() resolved while the broker's basic.cancel-ok was still held by the grader (for ${ms(CANCEL_HOLD_MS)}): it did not wait for the broker to confirm the cancel, and deliveries may still arrive. Await ch.cancel(consumerTag).`);
  try {
    await t.within("stop()", 3000, stopping);
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`stop() threw: ${errText(e)}.`);
  }
  const after = await w.count(w.topo.main);
  if (after.consumerCount !== 0) t.fail(`After stop() resolved, queue "${w.topo.main}" still has ${after.consumerCount} consumer(s): stop() must cancel the consumer (await ch.cancel(consumerTag)).`);
}

/** The DLQ's messages for these ids: each once, intact, with x-retry-count maxRetries (or, for a message that arrived above it, one of `counts`). */
async function expectDeadLetters(t: T, w: World, dead: Msg[], setting: string, counts = new Map<string, number[]>()): Promise<void> {
  const got = await w.drain(w.topo.dlq);
  const byId = new Map<string, GetMessage[]>();
  for (const m of got) byId.set(String(m.properties.messageId), [...(byId.get(String(m.properties.messageId)) ?? []), m]);
  for (const m of dead) {
    const found = byId.get(m.id) ?? [];
    if (found.length !== 1) t.fail(`${setting} The DLQ holds ${found.length} message(s) with messageId ${describeValue(m.id)}; expected exactly 1 (${history(w, m.id)}).`);
    const d = found[0]!;
    const want = JSON.stringify(m.body);
    if (!d.content.equals(Buffer.from(want))) t.fail(`${setting} The dead letter of ${describeValue(m.id)} has body ${describeValue(d.content.toString("utf8"), 120)}; expected the original body ${describeValue(want, 120)}.`);
    const count = headerCount(d);
    const allowed = counts.get(m.id) ?? [w.options.maxRetries];
    if (!allowed.includes(Number(count ?? 0))) t.fail(`${setting} The dead letter of ${describeValue(m.id)} carries x-retry-count ${describeValue(count)}; ${counts.has(m.id) ? `expected ${allowed.join(" or ")}` : `after its last retry it must carry maxRetries, ${w.options.maxRetries}`}.`);
  }
  const stray = got.filter((m) => !dead.some((x) => x.id === m.properties.messageId));
  if (stray.length) t.fail(`${setting} The DLQ also holds ${stray.map((m) => describeValue(m.properties.messageId)).join(", ")}, which the handler never failed for good.`);
}

async function expectEmpty(t: T, w: World, setting: string): Promise<void> {
  for (const q of [w.topo.main, w.topo.retry]) {
    const c = await w.count(q);
    if (c.messageCount !== 0) t.fail(`${setting} Queue "${q}" still holds ${c.messageCount} message(s) at the end: ${(await w.drain(q)).map((m) => describeValue(m.properties.messageId)).join(", ")}.`);
  }
}

const FAILS_WORD = (f: number) => (f === Infinity ? "always" : f === 0 ? "never" : f === 1 ? "once" : f === 2 ? "twice" : `${f} times`);

export default defineGrader<RetryDlqSubmission>({
  exports: { setupRetryTopology: "function", startRetryConsumer: "function" },
  // Checks share nothing (each has its queues and proxy, and its own hosts) and mostly wait on TTLs.
  concurrency: 3,
  checks: [
    {
      name: "the retry count lives in the message: a restarted consumer goes on counting",
      hint: "Where does your count live? A variable (a Map by messageId) dies with the process, and the next one starts again at zero. Read x-retry-count from the delivery's headers, and write retryCount + 1 into the copy's headers.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = t.rng.int(3, 4);
        const ttl = t.rng.int(150, 220);
        const w = await World.create(t, "restart", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [poison, good] = makeMsgs(t.rng, "p", 2) as [Msg, Msg];
        w.failures.set(poison.id, Infinity);
        // The first process dies while the poison message waits in the retry queue (after its
        // a1-th failure, its copy confirmed and the original acked); the second dies inside the
        // handler, on the delivery with x-retry-count c2; the third finishes the job.
        const a1 = t.rng.int(1, R - 1);
        const c2 = t.rng.int(a1, R);
        const run1 = await w.start();
        let armed = true;
        w.dels.onSettle((ds, s) => {
          if (armed && s.how === "ack" && s.frame.link === run1.link && ds.some((d) => d.messageId === poison.id && w.countOf(d) === a1 - 1)) {
            armed = false;
            void w.kill(run1);
          }
        });
        await w.publish([poison, good]);
        const setting = `maxRetries ${R}, retryDelayMs ${ttl}; ${describeValue(poison.id)} always fails.`;
        await w.until(() => !run1.host.alive, budget(a1, ttl), () => `${setting} The grader meant to SIGKILL your consumer once the original of ${describeValue(poison.id)} was acked after failure ${a1}, but ${history(w, poison.id)}.`);
        const killedAt = `The grader SIGKILLed your consumer right after it acked ${describeValue(poison.id)} on its failure ${a1} (its copy, x-retry-count ${a1}, waiting in the retry queue), and started a new process`;
        // Set before the second process starts: its first delivery may reach the handler before start() returns.
        let killed2 = false;
        w.plan = (call) => {
          if (!killed2 && call.id === poison.id && call.delivery && call.delivery.link !== run1.link && call.wireCount === c2) {
            killed2 = true;
            return "kill";
          }
          return w.failuresOf(call.id) < (w.failures.get(call.id) ?? 0) ? "fail" : "ok";
        };
        const run2 = await w.start();
        await w.until(() => !run2.host.alive, budget(R, ttl), () => `${setting} ${killedAt}. The grader meant to SIGKILL that one too, inside the handler on the delivery with x-retry-count ${c2}, but ${history(w, poison.id)}.`);
        await w.start();
        const story = `${setting} ${killedAt}; it SIGKILLed that one inside the handler on the delivery with x-retry-count ${c2}, and started a third.`;
        await w.until(
          () => w.failuresOf(poison.id) >= R + 1 && w.applied(good.id) >= 1 && w.runs.filter((r) => r.host.alive).length > 0 && w.allSettled(),
          budget(R + 1, ttl),
          () => `${story} By then ${history(w, poison.id)}; expected ${R + 1} failures in all (x-retry-count 0 to ${R}), then the DLQ.`,
        );
        await w.watch(ttl + QUIET_EXTRA_MS);
        const failed = w.callsOf(poison.id).filter((c) => c.state === "failed");
        const counts = failed.map((c) => c.wireCount);
        if (failed.length !== R + 1 || counts.some((c, i) => c !== i)) {
          t.fail(`${story} The handler failed for it at x-retry-count ${describeValue(counts)} over the three processes; expected each of 0 to ${R} once: the count must go on where the dead process left it, not start again.`);
        }
        await expectDeadLetters(t, w, [poison], story);
      },
    },
    {
      name: "a crash between publishing the retry and acking the original loses nothing",
      hint: "Order matters: publish the copy, wait for the broker's confirm, then ack the original. Die before the copy is confirmed and the original comes back; die before the ack and both exist (a duplicate, which an idempotent handler absorbs). Ack first, and a death in between loses the message.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = 3;
        const ttl = t.rng.int(120, 180);
        const w = await World.create(t, "crash", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [p, g] = makeMsgs(t.rng, "c", 2) as [Msg, Msg];
        w.failures.set(p.id, 2);
        const setting = `maxRetries ${R}, retryDelayMs ${ttl}; the handler fails ${describeValue(p.id)} twice, then succeeds.`;
        // Crash 1: at the copy's content header, before it reaches the broker (the copy never exists).
        const run1 = await w.start();
        const gate1 = w.proxy.stopAt("toBroker", (f) => {
          if (f.type !== 2 || f.link !== run1.link) return false;
          const last = w.wire.publishes.at(-1);
          return !!last && last.link === run1.link && last.properties?.messageId === p.id && decodeContentHeader(f)?.properties.messageId === p.id;
        });
        gate1.onStop(() => void w.kill(run1));
        await w.publish([p, g]);
        await w.until(() => !run1.host.alive, budget(1, ttl), () => `${setting} The grader meant to SIGKILL your consumer as it published the retry copy of ${describeValue(p.id)}, but ${history(w, p.id)}, and no copy was published.`);
        gate1.drop();
        const crash1 = `${setting} The grader SIGKILLed your consumer as it published the first retry copy of ${describeValue(p.id)}, before the copy reached the broker, and started a new process`;
        // Crash 2: the copy confirmed, the ack of the original stopped at the proxy (never reaches the broker).
        // Set before the second process starts: it may get the message before start() returns.
        const gate2 = w.proxy.stopAt("toBroker", (f) => {
          if (f.link === run1.link || decodeMethod(f)?.name !== "basic.ack") return false;
          return w.dels.settledBy(f).some((d) => d.messageId === p.id && w.callOf(d)?.state === "failed");
        });
        const run2 = await w.start();
        gate2.onStop(() => void w.kill(run2));
        await w.until(
          () => !run2.host.alive,
          budget(2, ttl),
          () => `${crash1}. The grader meant to SIGKILL that one as it acked the original of ${describeValue(p.id)} after its copy was confirmed, but ${history(w, p.id)}. If the original never came back, it was lost in the first crash.`,
        );
        gate2.drop();
        const story = `${crash1}; then it SIGKILLed that one just as it acked the original after its copy (x-retry-count 1) was confirmed, the ack never reaching the broker, and started a third.`;
        await w.start();
        await w.until(
          () => w.applied(p.id) >= 1 && w.applied(g.id) >= 1 && w.allSettled(),
          budget(R + 1, ttl),
          () => `${story} By then ${history(w, p.id)}: the message ${w.applied(p.id) ? "was handled" : "was never handled again: lost"}.`,
        );
        await w.watch(ttl + QUIET_EXTRA_MS);
        await expectEmpty(t, w, story);
        const dead = await w.drain(w.topo.dlq);
        if (dead.length) t.fail(`${story} The DLQ holds ${dead.map((m) => describeValue(m.properties.messageId)).join(", ")}; the message never failed more than ${R} times.`);
      },
    },
    {
      name: "setupRetryTopology declares the main queue with its DLX, the TTL retry queue and the DLQ",
      hint: "Four things, all durable: the DLX (a direct exchange) and the DLQ bound to it; the main queue with x-dead-letter-exchange and x-dead-letter-routing-key pointing there; the retry queue with x-message-ttl and x-dead-letter-exchange \"\" with x-dead-letter-routing-key the main queue, so expired copies go back.",
      timeoutMs: 15000,
      async run(t: T) {
        const ttl = t.rng.int(150, 300);
        const R = t.rng.int(1, 5);
        const w = await World.create(t, "topo", { maxRetries: R, retryDelayMs: ttl, declare: false });
        const { topo } = w;
        const host = await t.learnerHost();
        // Through the proxy, so the grader counts the channels setup opens and closes.
        const conn = await host.cap("amqp.connection", { url: w.proxy.urlFor(t.amqpUrl) });
        const channels = () => {
          const n = (dir: "toBroker" | "toClient", m: number) => w.proxy.seen.filter((x) => x.direction === dir && x.frame.type === 1 && x.frame.classId === 20 && x.frame.methodId === m).length;
          return { opened: n("toBroker", 10), closed: n("toBroker", 40) + n("toClient", 40) };
        };
        const setup = async (what: string) => {
          try {
            await t.within(what, CALL_MS, host.call("setupRetryTopology", conn, topo.main, { maxRetries: R, retryDelayMs: ttl }));
          } catch (e) {
            if ((e as Error)?.name === "CheckFailure") throw e;
            t.fail(`${what} threw: ${brokerText(e)}.`);
          }
        };
        await setup(`setupRetryTopology(conn, "${topo.main}", { maxRetries: ${R}, retryDelayMs: ${ttl} })`);
        await host.turns();
        await w.watch(30);
        const ch0 = channels();
        if (ch0.opened !== ch0.closed) t.fail(`After setupRetryTopology() resolved, ${ch0.opened - ch0.closed} of the ${ch0.opened} channel(s) it opened on the connection are still open: close what you open (the connection is the caller's).`);
        const probe = async (queue: string, args: Record<string, unknown>, role: string) => {
          const ch = await w.gconn.createChannel();
          ch.on("error", () => {});
          try {
            await ch.checkQueue(queue);
          } catch (e) {
            if (amqpCode(e) === 404) t.fail(`After setupRetryTopology() resolved, there is no queue "${queue}" (${role}).`);
            throw e;
          }
          try {
            await ch.assertQueue(queue, { durable: true, arguments: args });
            await ch.close().catch(() => {});
          } catch (e) {
            if (amqpCode(e) !== 406) throw e;
            const said = brokerText(e);
            const arg = /inequivalent arg '([^']+)'/.exec(said)?.[1];
            const expected = arg && arg in args ? ` expected ${describeValue(args[arg])}` : arg === "durable" ? " it must be durable" : arg ? " it must not have it" : "";
            t.fail(`Queue "${queue}" (${role}) is not declared as the contract says: the broker refused the grader's re-declaration (${said})${arg ? `: for ${arg},${expected}` : ""}.`);
          }
        };
        await probe(topo.main, { "x-dead-letter-exchange": topo.dlx, "x-dead-letter-routing-key": topo.dlq }, "the main queue, whose rejects go to the DLQ");
        await probe(topo.retry, { "x-message-ttl": ttl, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": topo.main }, "the retry queue, whose copies expire back into the main queue");
        await probe(topo.dlq, {}, "the DLQ");
        const ex = await w.gconn.createChannel();
        ex.on("error", () => {});
        try {
          await ex.assertExchange(topo.dlx, "direct", { durable: true });
          await ex.close().catch(() => {});
        } catch (e) {
          t.fail(`The dead-letter exchange "${topo.dlx}" is not a durable direct exchange (the broker says: ${brokerText(e)}).`);
        }

        // How it behaves, seen from outside: a rejected message reaches the DLQ; a copy in the
        // retry queue comes back to the main queue after the TTL, not before.
        const [rej, back, keep] = makeMsgs(t.rng, "t", 3) as [Msg, Msg, Msg];
        await w.publish([rej]);
        const got = await w.gch.get(topo.main);
        if (!got) t.fail(`The grader published a message to "${topo.main}" and could not get it back from the queue.`);
        w.gch.reject(got, false);
        const sentAt = performance.now();
        w.gch.sendToQueue(topo.retry, Buffer.from(JSON.stringify(back.body)), { persistent: true, messageId: back.id });
        await w.gch.waitForConfirms();
        let arrived: GetMessage | false = false;
        while (!arrived && performance.now() - sentAt < ttl + 3000) {
          arrived = await w.gch.get(topo.main, { noAck: true });
          if (!arrived) await sleep(5);
        }
        const waited = performance.now() - sentAt;
        if (!arrived) t.fail(`The grader put a message in the retry queue "${topo.retry}"; ${ms(waited)} later it had not come back to "${topo.main}" (its TTL is ${ttl} ms). The retry queue needs x-message-ttl and x-dead-letter-exchange "" with x-dead-letter-routing-key "${topo.main}".`);
        if (waited < ttl - TTL_TOLERANCE_MS) t.fail(`A message put in the retry queue came back to the main queue after ${ms(waited)}; with retryDelayMs ${ttl} it must wait at least that long.`);
        const dlq = await w.count(topo.dlq);
        if (dlq.messageCount !== 1) t.fail(`The grader rejected a message of "${topo.main}" without requeue; the DLQ "${topo.dlq}" then held ${dlq.messageCount} messages, expected 1: the main queue dead-letters to "${topo.dlx}" with routing key "${topo.dlq}", which is bound to the DLQ.`);

        // Declaring again (every start does) keeps what is queued.
        await w.publish([keep]);
        await setup("setupRetryTopology() (a second time)");
        const [main, dead] = [await w.count(topo.main), await w.count(topo.dlq)];
        if (main.messageCount !== 1 || dead.messageCount !== 1) t.fail(`After a second setupRetryTopology(), the main queue holds ${main.messageCount} (expected 1) and the DLQ ${dead.messageCount} (expected 1): declaring again must keep the messages.`);
      },
    },
    {
      name: "a message that fails k times is retried, then applied exactly once",
      hint: "On failure, publish a copy (x-retry-count + 1) to the retry queue and ack the original once the copy is confirmed; on success, ack. Every delivery is settled exactly once, and a message that finally succeeds never goes to the DLQ.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = t.rng.int(3, 4);
        const ttl = t.rng.int(100, 160);
        const w = await World.create(t, "once", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const fails = t.rng.shuffle([0, 1, 2, R, 0, 1]);
        const msgs = makeMsgs(t.rng, "k", fails.length);
        msgs.forEach((m, i) => w.failures.set(m.id, fails[i]!));
        const plan = msgs.map((m, i) => `${describeValue(m.id)} fails ${FAILS_WORD(fails[i]!)}`).join(", ");
        const setting = `maxRetries ${R}, retryDelayMs ${ttl}: ${plan}.`;
        const run = await w.start();
        await w.publish(msgs);
        await w.until(() => msgs.every((m) => w.applied(m.id) >= 1) && w.allSettled(), budget(R, ttl), () => `${setting} By then: ${describeEnd(w, msgs)}.`);
        await w.watch(ttl + QUIET_EXTRA_MS);
        for (const [i, m] of msgs.entries()) {
          const calls = w.callsOf(m.id);
          if (w.applied(m.id) !== 1) t.fail(`${setting} The handler succeeded ${w.applied(m.id)} times for ${describeValue(m.id)} (${history(w, m.id)}); a message is applied exactly once.`);
          if (calls.length !== fails[i]! + 1) t.fail(`${setting} ${history(w, m.id)} for ${describeValue(m.id)}; expected ${fails[i]! + 1} calls.`);
          const counts = calls.map((c) => c.wireCount);
          if (counts.some((c, j) => c !== j)) t.fail(`${setting} The deliveries of ${describeValue(m.id)} carried x-retry-count ${describeValue(counts)}; expected ${describeValue(counts.map((_, j) => j))}.`);
        }
        const dead = await w.drain(w.topo.dlq);
        if (dead.length) t.fail(`${setting} The DLQ holds ${dead.map((m) => describeValue(m.properties.messageId)).join(", ")}, although every message succeeded within ${R} retries.`);
        await expectEmpty(t, w, setting);
        await stopCleanly(t, w, run);
      },
    },
    {
      name: "a message that always fails reaches the DLQ after exactly maxRetries retries",
      hint: "Count with the header: a delivery with x-retry-count < maxRetries gets another retry; one with x-retry-count = maxRetries that fails goes to the DLQ (reject it without requeue). So a message is handled maxRetries + 1 times. With maxRetries 0, the first failure is the last.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = t.rng.int(1, 4);
        const ttl = t.rng.int(100, 160);
        const w = await World.create(t, "dead", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const w0 = await World.create(t, "dead0", { maxRetries: 0, retryDelayMs: ttl, declare: true });
        const [p1, p2, ok] = makeMsgs(t.rng, "d", 3) as [Msg, Msg, Msg];
        const [q] = makeMsgs(t.rng, "z", 1) as [Msg];
        w.failures.set(p1.id, Infinity);
        w.failures.set(p2.id, Infinity);
        w0.failures.set(q.id, Infinity);
        const setting = `maxRetries ${R}, retryDelayMs ${ttl}: ${describeValue(p1.id)} and ${describeValue(p2.id)} always fail, ${describeValue(ok.id)} never.`;
        const setting0 = `On a queue with maxRetries 0: ${describeValue(q.id)} always fails.`;
        await Promise.all([w.start(), w0.start()]);
        await Promise.all([w.publish([p1, ok, p2]), w0.publish([q])]);
        await w.until(() => [p1, p2].every((m) => w.failuresOf(m.id) >= R + 1) && w.applied(ok.id) >= 1 && w.allSettled(), budget(R + 1, ttl), () => `${setting} By then: ${describeEnd(w, [p1, p2, ok])}; expected ${R + 1} failures each, then the DLQ.`);
        await w0.until(() => w0.failuresOf(q.id) >= 1 && w0.allSettled(), 3000, () => `${setting0} By then ${history(w0, q.id)}.`);
        await w.watch(ttl + QUIET_EXTRA_MS);
        for (const m of [p1, p2]) {
          const n = w.callsOf(m.id).length;
          if (n !== R + 1) t.fail(`${setting} ${history(w, m.id)} for ${describeValue(m.id)}; with maxRetries ${R} it is handled exactly ${R + 1} times (the first delivery and ${R} retries), then goes to the DLQ.`);
        }
        if (w0.callsOf(q.id).length !== 1) t.fail(`${setting0} ${history(w0, q.id)}; with maxRetries 0 the first failure sends it to the DLQ.`);
        await expectDeadLetters(t, w, [p1, p2], setting);
        await expectDeadLetters(t, w0, [q], setting0);
        await expectEmpty(t, w, setting);
        await expectEmpty(t, w0, setting0);
      },
    },
    {
      name: "every retry waits at least the TTL, in the retry queue",
      hint: "The wait belongs to the broker: the copy sits in the retry queue until its x-message-ttl expires and the broker dead-letters it back. nack with requeue, or a publish straight to the main queue, brings it back at once.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = 3;
        const ttl = t.rng.int(250, 350);
        const w = await World.create(t, "ttl", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [p, q] = makeMsgs(t.rng, "w", 2) as [Msg, Msg];
        w.failures.set(p.id, R);
        w.failures.set(q.id, 1);
        const setting = `retryDelayMs ${ttl}: ${describeValue(p.id)} fails ${R} times, ${describeValue(q.id)} once, then each succeeds.`;
        await w.start();
        await w.publish([p, q]);
        await w.until(() => w.applied(p.id) >= 1 && w.applied(q.id) >= 1 && w.allSettled(), budget(R, ttl), () => `${setting} By then: ${describeEnd(w, [p, q])}.`);
        for (const m of [p, q]) {
          const calls = w.callsOf(m.id);
          for (let i = 1; i < calls.length; i++) {
            const gap = calls[i]!.startedAt - (calls[i - 1]!.endedAt ?? calls[i - 1]!.startedAt);
            if (gap < ttl - TTL_TOLERANCE_MS) {
              t.fail(`${setting} The handler failed on ${describeValue(m.id)} and was called for it again ${ms(gap)} later (call ${i + 1}); each retry waits at least retryDelayMs in the retry queue.`);
            }
          }
        }
      },
    },
    {
      name: "a poison message waiting for its retry does not hold up other messages",
      hint: "While a failed message waits, it must not occupy your consumer: hand it to the retry queue and ack it, so the next delivery comes at once. Don't wait the delay in your process (a setTimeout before the retry) with the message still unacked.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = 2;
        const ttl = t.rng.int(400, 500);
        const w = await World.create(t, "poison", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [poison] = makeMsgs(t.rng, "x", 1) as [Msg];
        w.failures.set(poison.id, Infinity);
        await w.start();
        await w.publish([poison]);
        const published = new Map<string, number>();
        const goods: Msg[] = [];
        for (let round = 1; round <= R; round++) {
          await w.until(() => w.failuresOf(poison.id) >= round, budget(round, ttl), () => `${describeValue(poison.id)} always fails; ${history(w, poison.id)}.`);
          // While it waits in the retry queue, good messages arrive one after another.
          const batch = makeMsgs(t.rng, `g${round}`, t.rng.int(3, 4));
          for (const g of batch) {
            await w.publish([g]);
            published.set(g.id, performance.now());
            goods.push(g);
            await sleep(t.rng.int(20, 50));
          }
          await w.until(
            () => batch.every((g) => w.applied(g.id) >= 1),
            GOOD_MS + 2000,
            () => `While ${describeValue(poison.id)} waited for retry ${round} (retryDelayMs ${ttl}), the grader published ${batch.length} good messages: ${describeEnd(w, batch)}.`,
          );
          for (const g of batch) {
            const done = w.callsOf(g.id).find((c) => c.state === "ok")!;
            const took = done.endedAt! - published.get(g.id)!;
            if (took > GOOD_MS) {
              t.fail(`While ${describeValue(poison.id)} waited for retry ${round} (retryDelayMs ${ttl}), the grader published ${describeValue(g.id)}; it was handled ${ms(took)} later (at most ${GOOD_MS} ms allowed): the poison message held up the queue. A failed message must leave your consumer at once, into the retry queue.`);
            }
          }
        }
        await w.until(() => w.failuresOf(poison.id) >= R + 1 && w.allSettled(), budget(R + 1, ttl), () => `${describeValue(poison.id)} always fails; ${history(w, poison.id)}.`);
        for (const g of goods) if (w.applied(g.id) !== 1) t.fail(`${describeValue(g.id)} was handled ${w.applied(g.id)} times; expected once.`);
      },
    },
    {
      name: "the retry count comes from x-retry-count, never from x-death",
      hint: "x-death is the broker's record of dead-lettering, and its count is not yours: from RabbitMQ 3.13 it no longer goes up when a client republishes a message (a retry is a republish), and a message may carry x-death entries from other queues. Read and write x-retry-count.",
      timeoutMs: 20000,
      async run(t: T) {
        const R = 4;
        const ttl = t.rng.int(100, 150);
        const w = await World.create(t, "xdeath", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const k = t.rng.int(2, 3);
        const [m1, m2, m3] = makeMsgs(t.rng, "h", 3) as [Msg, Msg, Msg];
        const now = Math.floor(Date.now() / 1000);
        // m1: retried k times already, as RabbitMQ 3.13+ shows it: x-death's count stayed at 1.
        m1.headers = { ...m1.headers, "x-retry-count": k, "x-death": [{ count: 1, reason: "expired", queue: w.topo.retry, exchange: "", "routing-keys": [w.topo.retry], time: { "!": "timestamp", value: now } }] };
        // m2: dead-lettered elsewhere before it came here (an upstream queue, a shovel): never retried here.
        m2.headers = { ...m2.headers, "x-death": [{ count: R + 2, reason: "rejected", queue: "billing.upstream", exchange: "", "routing-keys": ["billing.upstream"], time: { "!": "timestamp", value: now } }] };
        // m3: its count is past maxRetries already (copies that waited while maxRetries was lowered): its first failure is its last.
        const over = R + t.rng.int(1, 3);
        m3.headers = { ...m3.headers, "x-retry-count": over };
        w.failures.set(m1.id, Infinity);
        w.failures.set(m2.id, Infinity);
        w.failures.set(m3.id, Infinity);
        const version = String((w.gconn as unknown as { connection?: { serverProperties?: { version?: unknown } } }).connection?.serverProperties?.version ?? "unknown");
        const setting = `maxRetries ${R} (broker: RabbitMQ ${version}). ${describeValue(m1.id)} arrived with x-retry-count ${k} and an x-death entry for the retry queue with count 1 (what RabbitMQ 3.13 and later show after ${k} retries: the count no longer goes up when a client republishes); ${describeValue(m2.id)} arrived with no x-retry-count and an x-death entry with count ${R + 2} from another queue; ${describeValue(m3.id)} arrived with x-retry-count ${over}, past maxRetries. All three always fail.`;
        await w.start();
        await w.publish([m1, m2, m3]);
        await w.until(() => w.failuresOf(m1.id) >= R - k + 1 && w.failuresOf(m2.id) >= R + 1 && w.failuresOf(m3.id) >= 1 && w.allSettled(), budget(R + 1, ttl), () => `${setting} By then: ${describeEnd(w, [m1, m2, m3])}.`);
        await w.watch(ttl + QUIET_EXTRA_MS);
        if (w.callsOf(m1.id).length !== R - k + 1) t.fail(`${setting} ${history(w, m1.id)} for ${describeValue(m1.id)}; its x-retry-count says ${k} retries are behind it, so it gets ${R - k} more: ${R - k + 1} calls in all.`);
        if (w.callsOf(m2.id).length !== R + 1) t.fail(`${setting} ${history(w, m2.id)} for ${describeValue(m2.id)}; it had never been retried here (no x-retry-count), so it gets all ${R} retries: ${R + 1} calls.`);
        if (w.callsOf(m3.id).length !== 1) t.fail(`${setting} ${history(w, m3.id)} for ${describeValue(m3.id)}; its x-retry-count ${over} is past maxRetries ${R}, so its first failure sends it to the DLQ (x-retry-count >= maxRetries, not only ==).`);
        await expectDeadLetters(t, w, [m1, m2, m3], setting, new Map([[m3.id, [over, R]]]));
      },
    },
    {
      name: "the original is acked only once its retry copy is confirmed",
      hint: "Publish the copy on a confirm channel and wait for the broker's ack of the copy (its publish callback, or waitForConfirms on a channel of its own) before you ack the original. The seed's code acks right after publishing: if the broker never took the copy, the message is gone.",
      timeoutMs: 15000,
      async run(t: T) {
        const R = 2;
        const ttl = t.rng.int(100, 150);
        const w = await World.create(t, "order", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [p, g] = makeMsgs(t.rng, "o", 2) as [Msg, Msg];
        w.failures.set(p.id, 1);
        // The broker's confirm of the copy is held: the original must stay unacked all along.
        w.wire.hold((c) => c.covered.some((x) => x.properties?.messageId === p.id));
        await w.start();
        await w.publish([p, g]);
        const setting = `The handler failed ${describeValue(p.id)} once; the grader held the broker's confirm for its retry copy for ${ms(HOLD_MS)}.`;
        await w.until(() => w.copiesOf(p.id).some((c) => c.confirm !== null), budget(1, ttl), () => `The handler failed ${describeValue(p.id)} once; ${history(w, p.id)}, and ${w.copiesOf(p.id).length ? "the broker had not answered for its copy" : "no copy of it was published"} within the time.`);
        await w.watch(HOLD_MS);
        const first = w.deliveriesOf(p.id)[0]!;
        if (first.settled && first.settled.how !== "closed") t.fail(`${setting} Your consumer settled the original (basic.${first.settled.how}) while the confirm was held.`);
        w.wire.release();
        await w.until(() => w.applied(p.id) >= 1 && w.applied(g.id) >= 1 && w.allSettled(), budget(2, ttl), () => `${setting} Then it let the confirm through; by then ${history(w, p.id)}.`);
        if (w.applied(p.id) !== 1) t.fail(`${setting} Then it let the confirm through; ${history(w, p.id)}: expected it applied exactly once.`);
      },
    },
    {
      name: "a retry copy the broker nacks leaves the original in the queue",
      hint: "A nack of the copy means the broker did not take it: the original is now the only one. Nack the original with requeue (it comes straight back and the handler runs again), or publish the copy again and ack the original only after a positive confirm. Acking it, or rejecting it into the DLQ, loses the message.",
      timeoutMs: 15000,
      async run(t: T) {
        const R = t.rng.int(2, 4);
        const ttl = t.rng.int(100, 150);
        const w = await World.create(t, "refused", { maxRetries: R, retryDelayMs: ttl, declare: true });
        const [p, g] = makeMsgs(t.rng, "n", 2) as [Msg, Msg];
        w.failures.set(p.id, 1);
        // The broker takes the copy; its ack reaches the consumer as a nack. What the broker holds
        // afterwards is a duplicate at most, so the outcome is judged on the wire: the original
        // must not be acked (or dead-lettered) on the strength of a refused copy.
        let refused = 0;
        w.wire.refuse((c) => refused === 0 && c.covered.some((x) => x.properties?.messageId === p.id) && ++refused === 1);
        await w.start();
        await w.publish([p, g]);
        const setting = `maxRetries ${R}, retryDelayMs ${ttl}. The handler failed ${describeValue(p.id)} once; the grader turned the broker's ack of its retry copy into a nack on its way to your consumer.`;
        await w.until(
          () => refused > 0 && w.applied(p.id) >= 1 && w.applied(g.id) >= 1 && w.allSettled(),
          budget(3, ttl),
          () => `${setting} By then ${refused ? "" : "(no copy of it had been confirmed) "}${history(w, p.id)}.${w.unsettledText()}`,
        );
        await w.watch(ttl + QUIET_EXTRA_MS);
        await expectEmpty(t, w, setting);
        const dead = await w.drain(w.topo.dlq);
        if (dead.length) t.fail(`${setting} The DLQ holds ${dead.map((m) => describeValue(m.properties.messageId)).join(", ")}; the message failed once, with ${R} retries allowed.`);
      },
    },
  ],
});
