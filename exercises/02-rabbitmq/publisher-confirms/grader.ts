import { isDeepStrictEqual } from "node:util";
import { CheckFailure, amqpCode, defineGrader, describeValue, newTimers } from "../../../src/kit/index.ts";
import type { Publisher, PublisherConfirmsSubmission } from "../../../src/contracts/publisher-confirms.ts";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "../../../src/contracts/publisher-confirms.ts";
import {
  Call,
  arrange,
  arrangeChaos,
  brokerWords,
  errText,
  fate,
  frames,
  keyText,
  learnerConnection,
  makeEvent,
  matchMessages,
  ms,
  mustHaveResolved,
  newPublisher,
  publishInTurn,
  randomKey,
  receiptId,
  receiptsMatch,
  refOf,
  settleAll,
  twoKeys,
  type ChaosWorld,
  type Key,
  type T,
} from "./grader-util.ts";

/**
 * How long a burst of publishes stays pending, watched, after the broker's confirms for all of
 * them were held at the proxy. A fire-and-forget publish resolved long before; this catches a
 * short "wait a little, then assume it worked" timer. Timers of any length are the deadline
 * check's business, which holds confirms for seconds.
 */
const OBSERVE_MS = 200;
/** Time the learner's code gets to settle its calls once every answer has reached its connection. */
const SETTLE_MS = 2000;
/**
 * The deadline check. Each publish must reject at its own deadline: not before (a timer fires no
 * earlier than asked, so only clock rounding is allowed), and at most LATE_MS after it (a loaded
 * machine). The publisher with the default deadline must stay pending through HOLD_MS: longer
 * than any "assume it made it" timeout a learner might write before the deadline.
 */
const EARLY_TOLERANCE_MS = 5;
const LATE_MS = 500;
const HOLD_MS = 2500;
/** Once the connection is cut, its pending publishes must reject within this, long before their deadline. */
const CUT_SETTLE_MS = 2000;

const CONFIRM_HINT_HOLD = "A publish that resolves before its confirm tells the caller \"safe\" about a message the broker has not taken responsibility for: if the broker dies now, the message is lost and nobody knows.";

export default defineGrader<PublisherConfirmsSubmission>({
  exports: { createPublisher: "function" },
  // Checks share nothing and mostly wait on the broker (one holds confirms for 2.5 s): three at a time.
  concurrency: 3,
  checks: [
    {
      name: "createPublisher declares a durable topic exchange",
      hint: "assertExchange(name, type, options): which type lets consumers bind with patterns like order.*.eu, and which option makes the exchange survive a broker restart?",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t);
        const { obs, exchange } = w;
        await newPublisher(t, w.host, w.conn, exchange);

        // Passive first: a plain re-declare of a missing exchange would create it.
        if (!(await obs.exchangeExists(exchange))) {
          t.fail(`After createPublisher(conn, "${exchange}") resolved, the broker has no exchange of that name. Declare it in createPublisher(), before it resolves.`);
        }

        // The broker accepts a re-declaration only when type, durable, auto_delete and internal
        // all match; its 406 reply names the first one that differs.
        const probe = await obs.throwaway();
        try {
          await probe.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
          await probe.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) !== 406) throw e;
          const said = brokerWords(e);
          const m = /inequivalent arg '([^']+)'.*received '([^']*)' but current is '([^']*)'/.exec(said);
          const [arg, current] = m ? [m[1], m[3]] : [undefined, undefined];
          if (arg === "type") {
            t.fail(`The exchange is a ${current} exchange, not a topic exchange (the broker refused the grader's re-declaration: ${said}). Consumers of domain events bind with patterns such as "order.*.eu" or "payment.#"; only a topic exchange routes on them.`);
          }
          if (arg === "durable") {
            t.fail(`The exchange is not durable (the broker says: ${said}). A non-durable exchange disappears when the broker restarts, and publishes to it then fail: persistent messages need a durable exchange and durable queues to survive a restart.`);
          }
          if (arg === "auto_delete") t.fail(`The exchange is auto-delete (the broker says: ${said}). It vanishes as soon as its last queue unbinds, taking the publisher's target with it.`);
          if (arg === "internal") t.fail(`The exchange is internal (the broker says: ${said}): clients cannot publish to an internal exchange.`);
          t.fail(`The broker refused the grader's declaration of a durable topic exchange named "${exchange}": ${said}.`);
        }

        // A second publisher (a restart, another instance) declares it again: that must work and
        // keep the exchange, bindings included.
        const queue = t.names.queue("bound");
        await obs.queue(t, queue, exchange, ["#"]);
        const conn2 = await learnerConnection(t, w.host);
        let again: Publisher;
        try {
          again = await newPublisher(t, w.host, conn2, exchange);
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`createPublisher() failed for an exchange that already exists (a second instance, or a restart): ${brokerWords(e)}.`);
        }
        const call = new Call("#1", keyText(randomKey(t.rng)), makeEvent(t.rng, 1), again, w.pulse);
        await settleAll(t, [call], 5000, "publish() on a second publisher");
        mustHaveResolved(t, call, " on a second publisher for the same exchange.");
        const got = await obs.collect(queue, 1);
        if (got.length !== 1) {
          t.fail(`The grader bound a queue to the exchange with "#", then called createPublisher() a second time and published one event through the new publisher: the queue received ${got.length} messages, expected 1. Declaring the exchange again must keep it and its bindings (never delete and re-create it), and publish() must publish to that exchange.`);
        }
      },
    },
    {
      name: "each event arrives as persistent JSON with a message id, a timestamp and its routing key",
      hint: "Look at the options of channel.publish(): persistent, messageId, timestamp (whole seconds, taken at each publish), contentType. The body is exactly JSON.stringify(event). Publish to the exchange you were given with the routing key you were given.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t);
        const { obs, exchange } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const created = Date.now();

        // Two pattern bindings that a topic exchange must tell apart: one with "*", one with "#".
        const pivot = randomKey(t.rng);
        const starPattern = `${pivot.entity}.*.${pivot.region}`;
        const hashPattern = `*.${pivot.action}.#`;
        const matchesStar = (k: Key) => k.entity === pivot.entity && k.region === pivot.region;
        const matchesHash = (k: Key) => k.action === pivot.action;
        const n = 8;
        let keys: Key[];
        do {
          keys = Array.from({ length: n }, () => {
            // Skew towards keys near the pivot, so both patterns see matches and near misses.
            const k = randomKey(t.rng);
            const roll = t.rng.next();
            if (roll < 0.3) return { ...k, entity: pivot.entity, region: pivot.region };
            if (roll < 0.55) return { ...k, action: pivot.action };
            return k;
          });
        } while (![matchesStar, matchesHash].every((f) => keys.some(f) && keys.some((k) => !f(k))));

        const all = t.names.queue("all");
        const star = t.names.queue("star");
        const hash = t.names.queue("hash");
        await Promise.all([obs.queue(t, all, exchange, ["#"]), obs.queue(t, star, exchange, [starPattern]), obs.queue(t, hash, exchange, [hashPattern])]);

        const events = keys.map((_, i) => makeEvent(t.rng, i, t.rng.pick(["OrderPlaced", "PaymentCaptured", "ParcelShipped"])));
        const calls: Call[] = [];
        // The publisher has been around for a while when the events come: a timestamp taken
        // once, when it was created, is then a second or more older than the publish.
        const age = t.rng.int(1100, 1400);
        await w.pulse.watch(age, () => null);
        const window = new Map<Call, [number, number]>();
        const before = Date.now();
        for (let i = 0; i < n; i++) {
          const from = Date.now();
          const call = new Call(`#${i + 1}`, keyText(keys[i]!), events[i]!, pub, w.pulse);
          await settleAll(t, [call], 5000, `publish("${call.key}", …)`);
          mustHaveResolved(t, call, ".");
          window.set(call, [from, Date.now()]);
          calls.push(call);
        }
        const after = Date.now();

        const msgs = await obs.collect(all, n);
        if (msgs.length === 0) {
          t.fail(`${n} publish() calls resolved, but a queue bound to exchange "${exchange}" with "#" received nothing. Publish to the exchange you were given, and make it a topic exchange (a direct exchange treats "#" as a plain word).`);
        }
        const got = matchMessages(t, msgs, events, `The queue bound with "#"`);
        if (got.size !== n) t.fail(`${n} publish() calls resolved, but a queue bound with "#" received ${got.size} of the events.`);

        const ids = new Map<string, string>();
        const lo = Math.floor(before / 1000) - 1;
        const hi = Math.ceil(after / 1000) + 1;
        for (const call of calls) {
          const m = got.get(call.ref)!;
          const p = m.properties;
          const what = `The message for publish("${call.key}", …)`;
          if (m.fields.routingKey !== call.key) t.fail(`${what} arrived with routing key ${describeValue(m.fields.routingKey)}, expected "${call.key}".`);
          if (p.deliveryMode !== 2) {
            t.fail(`${what} has delivery mode ${describeValue(p.deliveryMode)}, expected 2 (persistent). A transient message is lost when the broker restarts, even in a durable queue.`);
          }
          if (typeof p.contentType !== "string" || !/^application\/json\s*(;.*)?$/i.test(p.contentType)) {
            t.fail(`${what} has content type ${describeValue(p.contentType)}, expected "application/json": consumers (and the management UI) read it to know how to decode the body.`);
          }
          if (typeof p.messageId !== "string" || p.messageId === "") {
            t.fail(`${what} has message id ${describeValue(p.messageId)}. Every message needs a unique messageId: consumers use it to drop the duplicates that at-least-once delivery creates.`);
          }
          const receipt = receiptId(t, call);
          if (receipt !== p.messageId) t.fail(`publish("${call.key}", …) resolved to messageId "${receipt}", but the message it published carries messageId "${p.messageId}".`);
          const clash = ids.get(p.messageId);
          if (clash) t.fail(`Two messages carry the same messageId "${p.messageId}" (events ${clash} and ${call.ref}): a consumer that de-duplicates by id would drop one of them.`);
          ids.set(p.messageId, call.ref);
          const ts = p.timestamp as unknown;
          if (typeof ts !== "number") t.fail(`${what} has no timestamp (got ${describeValue(ts)}). Set the timestamp property to the publish time.`);
          if (ts >= lo * 1000 - 1000 && ts <= hi * 1000 + 1000) {
            t.fail(`${what} has timestamp ${ts}: that is milliseconds. AMQP timestamps are whole seconds since the epoch (Math.floor(Date.now() / 1000)); other clients and the management UI read ${ts} as a date thousands of years ahead.`);
          }
          // Within its own call, to the second (floor or round both land here).
          const [from, to] = window.get(call)!;
          if (ts < Math.floor(from / 1000) || ts > Math.ceil(to / 1000)) {
            t.fail(`${what} has timestamp ${ts} (${new Date(ts * 1000).toISOString()}), but publish() was called at ${new Date(from).toISOString()} and resolved at ${new Date(to).toISOString()}, ${ms(from - created)} after createPublisher() resolved. The timestamp is the time of each publish, taken in publish(), not once for the publisher.`);
          }
        }

        for (const [queue, pattern, matches] of [
          [star, starPattern, matchesStar],
          [hash, hashPattern, matchesHash],
        ] as const) {
          const routed = matchMessages(t, await obs.drain(queue), events, `The queue bound with "${pattern}"`);
          const expected = calls.filter((_, i) => matches(keys[i]!)).map((c) => c.key);
          const actual = calls.filter((c) => routed.has(c.ref)).map((c) => c.key);
          if (!isDeepStrictEqual(actual, expected)) {
            t.fail(`A queue bound to the exchange with "${pattern}" received the events published with keys [${actual.join(", ")}]; a topic exchange routes exactly [${expected.join(", ")}] there. ("*" matches one word, "#" zero or more.)`);
          }
        }
      },
    },
    {
      name: "message ids are unique, also across publishers",
      hint: "A counter restarts at 1 with every new publisher (every restart of the service), and a clock reading repeats within a millisecond. What id is unique everywhere?",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrange(t);
        const { obs, exchange } = w;
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("all");
        const calls: Call[] = [];
        // Two lives of the service: publish a few, stop; a new process publishes a few.
        for (let life = 0; life < 2; life++) {
          const host = life === 0 ? w.host : await t.host();
          const conn = life === 0 ? w.conn : await learnerConnection(t, host);
          const pub = await newPublisher(t, host, conn, exchange);
          if (life === 0) await obs.queue(t, queue, exchange, [key]);
          // At once, as concurrent requests would.
          const round = Array.from({ length: 3 }, (_, i) => new Call(`#${life * 3 + i + 1}`, key, makeEvent(t.rng, life * 10 + i), pub, w.pulse));
          await settleAll(t, round, 5000, "3 concurrent publish() calls");
          for (const c of round) mustHaveResolved(t, c, ".");
          calls.push(...round);
          await t.within("close()", 3000, pub.close());
          if (life === 0) await host.kill();
        }
        const events = calls.map((c) => c.event);
        const got = matchMessages(t, await obs.collect(queue, events.length), events, "The grader's queue");
        if (got.size !== events.length) {
          const firstLife = events.slice(0, 3).filter((e) => got.has(refOf(e))).length;
          t.fail(
            `${events.length} publish() calls resolved, but the grader's queue (bound to the exchange before the first publisher published) received ${got.size} of their events: ${firstLife} of 3 from the first process, ${got.size - firstLife} of 3 from the second, started after the first was closed and stopped.${
              firstLife === 3 ? " Closing a publisher must leave the exchange and its bindings alone, and a new publisher must not re-create it." : ""
            }`,
          );
        }
        const seen = new Map<string, Call>();
        for (const c of calls) {
          const id = got.get(c.ref)!.properties.messageId as unknown;
          if (typeof id !== "string" || id === "") t.fail(`The message for event ${c.ref} has message id ${describeValue(id)}; every message needs a unique messageId.`);
          const clash = seen.get(id);
          if (clash) {
            const across = calls.indexOf(clash) < 3 && calls.indexOf(c) >= 3;
            t.fail(
              `Two messages carry messageId "${id}": events ${clash.ref} and ${c.ref} (${across ? "one from the first process, one from the second: the ids start again with every restart" : "published at the same moment by one publisher"}). A consumer that de-duplicates by messageId would silently drop one of them.`,
            );
          }
          seen.set(id, c);
        }
      },
    },
    {
      name: "publish() resolves only after the broker confirms the message",
      hint: "A channel from createChannel() gets no confirms. Use a confirm channel and resolve from the callback amqplib calls when the broker's ack for that message arrives, not when publish() returns, and not because earlier messages were acked.",
      timeoutMs: 12000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, ledger, pulse } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("confirmed");
        await obs.queue(t, queue, exchange, [key]);
        // Timers already there (amqplib's heartbeats) are not the publisher's.
        const timersBefore = await w.host.timers();

        // The steady state first: a few publishes confirmed one by one, as usual.
        const warm = t.rng.int(1, 4);
        const steady = await publishInTurn(t, pub, pulse, key, Array.from({ length: warm }, (_, i) => makeEvent(t.rng, i)));

        // Then only the broker's basic.ack / basic.nack frames wait in the proxy; everything
        // else (the publishes themselves included) flows.
        ledger.hold();
        const n = t.rng.int(3, 5);
        const calls = Array.from({ length: n }, (_, i) => new Call(`#${warm + i + 1}`, key, makeEvent(t.rng, warm + i), pub, pulse));
        const setting = `After ${warm} publish() call(s) had resolved on their confirms, the grader held the broker's confirms at the proxy and called publish("${key}", …) ${n} more times at once (calls #${warm + 1} to #${warm + n}).`;
        const early = () => {
          const c = calls.find((x) => x.state !== "pending");
          if (!c) return null;
          if (c.state === "resolved") return `${setting} Call ${c.label} ${c.outcome}, while ${fate(ledger, c)}. ${CONFIRM_HINT_HOLD}`;
          return `${setting} Call ${c.label} ${c.outcome}, although nothing had gone wrong: ${fate(ledger, c)}, and its deadline (${DEFAULT_CONFIRM_TIMEOUT_MS} ms by default) was far off.`;
        };
        await pulse.until(
          () => calls.every((c) => ledger.of(c.event)?.confirm),
          3000,
          () => {
            const c = calls.find((x) => !ledger.of(x.event)?.confirm)!;
            return `${setting} Within 3 s the broker had not answered for call ${c.label}: ${fate(ledger, c)}.${ledger.of(c.event)?.tag === 0 ? " Create the channel with createConfirmChannel()." : ""}`;
          },
          early,
        );
        // The broker has every message and has answered; the answers wait at the proxy.
        await pulse.watch(OBSERVE_MS, early);

        ledger.release();
        await pulse.until(
          () => calls.every((c) => c.state !== "pending"),
          SETTLE_MS,
          () => {
            const c = calls.find((x) => x.state === "pending")!;
            return `${setting} Then the grader let the held confirms through. ${ms(SETTLE_MS)} later, call ${c.label} was ${c.outcome}, although ${fate(ledger, c)}.`;
          },
        );
        for (const c of calls) mustHaveResolved(t, c, ` although ${fate(ledger, c)}.`);
        // A settled publish leaves nothing behind: its deadline's timer went with it. The host
        // records the learner's timers, so this is exact, not a wait for a late effect.
        await w.host.turns();
        const left = newTimers(timersBefore, await w.host.timers(), 1000);
        if (left.length) {
          const [first] = left;
          const what = first!.kind === "interval" ? `an interval every ${first!.ms} ms` : `a timer of ${first!.ms} ms`;
          t.fail(`${setting} Every call resolved on its confirm, but your code still had ${left.length === 1 ? what : `${left.length} timers pending (the longest: ${what})`} (${first!.callback || "a callback"}). A publish that settled leaves nothing scheduled: clear its deadline's timer when the confirm comes, or a busy publisher piles up one live timer per message for the length of the deadline.`);
        }
        const all = [...steady, ...calls];
        const got = matchMessages(t, await obs.collect(queue, all.length), all.map((c) => c.event), "The grader's queue");
        receiptsMatch(t, all, got, "the grader's queue");
      },
    },
    {
      name: "a nacked message makes publish() reject, and the publisher keeps working",
      hint: "The confirm callback gets an error when the broker nacks: reject the publish with it. And one nack is about one message: keep the channel and the publisher as they are.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, ledger, pulse } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const [goodKey, badKey] = twoKeys(t.rng);
        // A full queue that refuses new messages: the broker nacks any publish routed to it.
        const ok = t.names.queue("ok");
        const full = t.names.queue("full");
        await Promise.all([obs.queue(t, ok, exchange, [goodKey]), obs.fullQueue(t, full, exchange, badKey)]);

        // The nack comes after the steady state: some publishes were acked first.
        const warm = t.rng.int(1, 3);
        const steady = await publishInTurn(t, pub, pulse, goodKey, Array.from({ length: warm }, (_, i) => makeEvent(t.rng, i)));
        const setting = `After ${warm} publish("${goodKey}", …) call(s) had resolved, the grader called publish("${badKey}", …), routed to a queue declared with x-overflow "reject-publish" that was full.`;
        const bad = new Call(`#${warm + 1}`, badKey, makeEvent(t.rng, warm), pub, pulse);
        await settleAll(t, [bad], 5000, "publish() to a full queue");
        // Judged on the broker's answer, which may come after a publish that did not wait for it.
        await pulse.until(() => !!ledger.of(bad.event)?.confirm, 1000, null);
        const wired = ledger.of(bad.event);
        if (bad.state === "resolved") {
          const when = wired?.answeredAt && bad.settledAt! < wired.answeredAt ? `, ${ms(wired.answeredAt - bad.settledAt!)} before the broker even answered` : "";
          if (wired?.confirm === "nack") t.fail(`${setting} It ${bad.outcome}${when}, but the broker nacked its message (delivery tag ${wired.tag}). The message is not on the broker, and the caller was told it is.`);
          if (!wired) t.fail(`${setting} It ${bad.outcome}, and its message never crossed the proxy.`);
          if (wired.tag === 0) {
            t.fail(`${setting} It resolved, but its message was lost: it went out on channel ${wired.channel}, which is not in confirm mode, so the broker dropped it without a word. Only confirms tell a publisher that the broker refused a message.`);
          }
          if (!wired.confirm) t.fail(`${setting} It ${bad.outcome}, and the broker had not answered for its message (delivery tag ${wired.tag}) a second later.`);
          t.fail(`${setting} It resolved and the broker acked its message, so it never reached the full queue bound with "${badKey}". Publish to the exchange you were given, with the routing key you were given.`);
        }
        if (wired?.confirm !== "nack") {
          t.fail(`${setting} It rejected with ${errText(bad.error)}, but the broker never nacked it (${fate(ledger, bad)}): reject on the broker's nack, not before.`);
        }

        // One nack concerns one message: the same publisher keeps working, on either key.
        const next = new Call(`#${warm + 2}`, goodKey, makeEvent(t.rng, warm + 1), pub, pulse);
        await settleAll(t, [next], 5000, "publish() after a nack");
        mustHaveResolved(t, next, ` right after call #${warm + 1} had been nacked. A nack concerns one message: the publisher must keep working.`);
        await obs.purge(full);
        const again = new Call(`#${warm + 3}`, badKey, makeEvent(t.rng, warm + 2), pub, pulse);
        await settleAll(t, [again], 5000, "publish() after a nack");
        mustHaveResolved(t, again, `, after an earlier publish with that key had been nacked and the queue had room again. A nack concerns one message: the publisher must keep working.`);
        const calls = [...steady, next, again];
        receiptsMatch(t, [...steady, next], matchMessages(t, await obs.collect(ok, warm + 1), calls.map((c) => c.event), "The queue bound with the accepted key"), "its queue");
        receiptsMatch(t, [again], matchMessages(t, await obs.collect(full, 1), [again.event], "The queue that had been full"), "that queue");
      },
    },
    {
      name: "concurrent publishes each settle on their own message's confirm",
      hint: "waitForConfirms() waits for every message outstanding on the channel, and rejects for all of them when any one is nacked. Which confirm belongs to which message? The callback of each publish knows; if you track confirms yourself, mind the `multiple` flag on acks and nacks.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, ledger, pulse } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const [goodKey, badKey] = twoKeys(t.rng);
        const ok = t.names.queue("ok");
        const full = t.names.queue("full");
        await Promise.all([obs.queue(t, ok, exchange, [goodKey]), obs.fullQueue(t, full, exchange, badKey)]);

        // Bursts of requests publishing at the same moment. In each, two neighbours and the last
        // one go to the full queue and are nacked; where the pair sits (the first included, but
        // always with an accepted message after it) comes from the seed. The broker's answers
        // are held until every message of the burst is on the broker, so each publish of the
        // burst is outstanding when the first answer arrives. A tracker that ignores `multiple`
        // is caught only when the broker answers for several messages in one frame: it nearly
        // always does in a burst, and another burst follows when it did not.
        let done = 0;
        for (let round = 1; round <= 4 && (round <= 1 || ledger.coalesced === 0); round++) {
          const n = t.rng.int(5, 7);
          const a = t.rng.int(0, n - 4);
          const bad = new Set([a, a + 1, n - 1]);
          ledger.hold();
          const calls = Array.from({ length: n }, (_, i) => new Call(`#${done + i + 1}`, bad.has(i) ? badKey : goodKey, makeEvent(t.rng, done + i), pub, pulse));
          const badCalls = calls.filter((_, i) => bad.has(i));
          const setting = `${done ? `After ${done} earlier publishes, ` : ""}${n} publish() calls ran at once: ${badCalls.map((c) => c.label).join(", ")} with key "${badKey}" (bound to a full queue that refuses messages), the others with "${goodKey}" (bound to a queue with room). The grader held the broker's answers until it had answered for all ${n}, then let them through.`;
          await pulse.until(
            () => calls.every((c) => ledger.of(c.event)?.confirm),
            3000,
            () => `${setting} Within 3 s the broker had not answered for every message: call ${calls.find((c) => !ledger.of(c.event)?.confirm)!.label}: ${fate(ledger, calls.find((c) => !ledger.of(c.event)?.confirm)!)}.`,
            () => {
              const c = calls.find((x) => x.state !== "pending");
              return c ? `${setting} Call ${c.label} ${c.outcome}, before the broker's answer for its message had reached your code (${fate(ledger, c)}).` : null;
            },
          );
          ledger.release();
          await pulse.until(
            () => calls.every((c) => c.state !== "pending"),
            SETTLE_MS,
            () => {
              const c = calls.find((x) => x.state === "pending")!;
              return `${setting} Every answer had reached your connection, but ${ms(SETTLE_MS)} later call ${c.label} was ${c.outcome}: ${fate(ledger, c)}. `;
            },
          );

          const wrongNacks = calls.filter((c) => c.key === goodKey && ledger.of(c.event)?.confirm === "nack");
          if (wrongNacks.length) {
            t.fail(`${setting} The broker nacked ${wrongNacks.map((c) => c.label).join(", ")} too: messages published with "${goodKey}" reached the full queue. A topic exchange routes each message by its own routing key.`);
          }
          const wronglyRejected = calls.find((c) => c.key === goodKey && c.state === "rejected");
          if (wronglyRejected) {
            t.fail(`${setting} Call ${wronglyRejected.label} ${wronglyRejected.outcome}, although ${fate(ledger, wronglyRejected)}. An accepted message reported as failed gets published again. Each publish must settle on its own message's confirm.`);
          }
          for (const b of badCalls) {
            if (b.state !== "resolved") continue;
            const wired = ledger.of(b.event);
            if (wired?.confirm === "nack") t.fail(`${setting} Call ${b.label} ${b.outcome}, but the broker nacked its message (delivery tag ${wired.tag}). Other messages' acks must not count for it.`);
            if (!wired || wired.tag === 0) t.fail(`${setting} Call ${b.label} resolved, but its message was lost: the channel is not in confirm mode, so the broker dropped it without a word.`);
            t.fail(`${setting} The broker acked call ${b.label}'s message, so it never reached the full queue: publish with the routing key you were given.`);
          }
          const good = calls.filter((c) => c.key === goodKey);
          for (const c of good) mustHaveResolved(t, c, ".");
          receiptsMatch(t, good, matchMessages(t, await obs.collect(ok, good.length), good.map((c) => c.event), "The queue for the accepted messages"), "the queue for the accepted messages");
          done += n;
        }
      },
    },
    {
      name: "without a confirm, publish() waits until its deadline, then rejects",
      hint: "Start a timer of confirmTimeoutMs (default 10 s) in each publish() and reject when it fires; clear it when the confirm comes. Until then, only the confirm (or the channel closing) settles the publish: never resolve on a timer.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, ledger, pulse } = w;
        // Three publishers on one connection: two with deadlines of their own (far enough apart
        // that no fixed timer fits both), one with the default.
        const dA = t.rng.int(300, 450);
        const dB = dA + t.rng.int(700, 850);
        const pubA = await newPublisher(t, w.host, w.conn, exchange, { confirmTimeoutMs: dA });
        const pubB = await newPublisher(t, w.host, w.conn, exchange, { confirmTimeoutMs: dB });
        const pubC = await newPublisher(t, w.host, w.conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("late");
        await obs.queue(t, queue, exchange, [key]);
        const pubs = [
          { name: "A", pub: pubA, deadline: dA as number | null },
          { name: "B", pub: pubB, deadline: dB as number | null },
          { name: "C", pub: pubC, deadline: null },
        ];
        const deadlineOf = (c: Call) => pubs.find((p) => c.label.startsWith(p.name))!.deadline;
        const intro = `The grader created publishers A ({ confirmTimeoutMs: ${dA} }), B ({ confirmTimeoutMs: ${dB} }) and C (no options: the default, ${DEFAULT_CONFIRM_TIMEOUT_MS} ms) on one connection; each published once, confirmed as usual.`;

        // Steady state: one confirmed publish each.
        const steady = pubs.map((p) => new Call(`${p.name}1`, key, makeEvent(t.rng, `${p.name}1`), p.pub, pulse));
        await settleAll(t, steady, 5000, "publish() with nothing held back");
        for (const c of steady) mustHaveResolved(t, c, ` on publisher ${c.label[0]}, with nothing held back.`);

        // Then the broker's confirms are held. Each publisher publishes twice, a moment apart:
        // each publish has a deadline of its own, counted from its own call.
        ledger.hold();
        const gap = t.rng.int(120, 200);
        const first = pubs.map((p) => new Call(`${p.name}2`, key, makeEvent(t.rng, `${p.name}2`), p.pub, pulse));
        await pulse.watch(gap, () => null);
        const second = pubs.map((p) => new Call(`${p.name}3`, key, makeEvent(t.rng, `${p.name}3`), p.pub, pulse));
        const held = [...first, ...second];
        const setting = `${intro} Then the grader held the broker's confirms at the proxy and called publish() on each publisher twice, ${gap} ms apart (A2, B2, C2, then A3, B3, C3).`;
        const fault = (c: Call): string | null => {
          const d = deadlineOf(c);
          if (c.state === "pending") {
            return d !== null && c.elapsed > d + LATE_MS
              ? `${setting} ${ms(c.elapsed)} after it was called, ${c.label} (deadline ${d} ms) had still not settled, while ${fate(ledger, c)}: at its deadline, publish() must reject.`
              : null;
          }
          if (c.state === "resolved") {
            return `${setting} ${c.label} ${c.outcome}, while ${fate(ledger, c)}${d !== null && c.elapsed >= d ? `: its deadline (${d} ms) had passed without a confirm, and then publish() must reject, not resolve` : ""}. ${CONFIRM_HINT_HOLD}`;
          }
          if (d === null) {
            return `${setting} ${c.label} ${c.outcome}, while ${fate(ledger, c)}; its deadline is the default, ${DEFAULT_CONFIRM_TIMEOUT_MS} ms. Until the deadline, only the confirm (or the channel closing) settles a publish.`;
          }
          if (c.elapsed < d - EARLY_TOLERANCE_MS) {
            return `${setting} ${c.label} ${c.outcome}, before its deadline of ${d} ms (counted from its own call), while ${fate(ledger, c)}.`;
          }
          return null;
        };
        const anyFault = () => {
          for (const c of held) {
            const f = fault(c);
            if (f) return f;
          }
          return null;
        };
        // A's and B's publishes reject, each at its own deadline; C's stay pending all along.
        await pulse.until(() => false, HOLD_MS, null, anyFault);
        for (const c of held) {
          if (deadlineOf(c) !== null && c.state !== "rejected") t.fail(fault(c) ?? `${setting} ${c.label} was ${c.outcome}.`);
          if (!ledger.of(c.event)?.confirm) {
            t.fail(`${setting} After ${ms(HOLD_MS)}, the broker had not answered for ${c.label} at all (${fate(ledger, c)}): the channel must be in confirm mode.`);
          }
        }

        // The confirms come late. The proxy pauses (nothing moves either way), lets them go
        // into its outbound queue, and from now on holds the confirm of A's next publish, A4;
        // then everything flows. A's code thus gets the late confirms of A2 and A3 (which
        // timed out) while A4 waits for its own, held, confirm: they must settle nothing.
        const a4Event = makeEvent(t.rng, "A4");
        w.proxy.pause();
        ledger.release();
        ledger.hold((covers) => covers.some((x) => x.ref === refOf(a4Event)));
        const a4 = new Call("A4", key, a4Event, pubA, pulse);
        // Whatever publish() does without a round trip to the broker is done by then.
        await w.host.turns();
        w.proxy.resume();
        const late = `${setting} A2, A3, B2 and B3 rejected at their deadlines. The grader then let the late confirms through to your code, and at the same moment A published once more (A4), whose own confirm it held.`;
        const a4Stop = () => {
          if (a4.state === "pending") return null;
          if (a4.state === "rejected") return `${late} A4 ${a4.outcome}, while ${fate(ledger, a4)}: a timeout concerns one message, the publisher must keep working.`;
          return `${late} A4 ${a4.outcome}, while ${fate(ledger, a4)}: a late confirm for a publish that already timed out must settle nothing else.`;
        };
        await pulse.until(
          () => !!ledger.of(a4.event)?.confirm,
          3000,
          () => `After its first two publishes had timed out, a new publish() on publisher A had not got its message to the broker within 3 s (${fate(ledger, a4)}): a timeout must not break the publisher.`,
          a4Stop,
        );
        await pulse.until(
          () => second[2]!.state !== "pending" && first[2]!.state !== "pending" && !!ledger.of(a4.event)?.confirm,
          SETTLE_MS,
          () => `${late} ${ms(SETTLE_MS)} later, C2 was ${first[2]!.outcome} and C3 was ${second[2]!.outcome}, although their confirms had reached your connection.`,
          a4Stop,
        );
        await w.host.turns();
        await pulse.watch(50, a4Stop);
        for (const c of [first[2]!, second[2]!]) mustHaveResolved(t, c, ` once its confirm, held for ${ms(c.elapsed)}, reached your code (publisher C, default deadline).`);
        ledger.release();
        await settleAll(t, [a4], SETTLE_MS + 3000, "publish() after a timeout");
        mustHaveResolved(t, a4, `, once its confirm came, after two earlier publishes on publisher A had timed out. A timeout concerns one message: the publisher keeps working.`);
        const resolved = [...steady, first[2]!, second[2]!, a4];
        receiptsMatch(t, resolved, matchMessages(t, await obs.collect(queue, held.length + steady.length + 1), [...steady, ...held, a4].map((c) => c.event), "The grader's queue"), "the grader's queue");
      },
    },
    {
      name: "a publish whose connection drops before its confirm rejects",
      hint: "When the channel closes with messages still unconfirmed, amqplib calls their confirm callbacks with an error. If you track confirms yourself, you must also fail what is pending when the channel closes, at once, not at the deadline.",
      timeoutMs: 12000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, ledger, pulse } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("orphans");
        await obs.queue(t, queue, exchange, [key]);

        // Mid-stream: some publishes confirmed, then several in flight with their confirms held.
        const warm = t.rng.int(1, 3);
        await publishInTurn(t, pub, pulse, key, Array.from({ length: warm }, (_, i) => makeEvent(t.rng, i)));
        ledger.hold();
        const m = t.rng.int(2, 4);
        const calls = Array.from({ length: m }, (_, i) => new Call(`#${warm + i + 1}`, key, makeEvent(t.rng, warm + i), pub, pulse));
        const setting = `After ${warm} publish() call(s) had resolved, the grader held the broker's confirms and called publish("${key}", …) ${m} more times (calls #${warm + 1} to #${warm + m}).`;
        await pulse.until(
          () => calls.every((c) => ledger.of(c.event)?.confirm),
          3000,
          () => `${setting} Within 3 s the broker had not answered for call ${calls.find((c) => !ledger.of(c.event)?.confirm)!.label}: ${fate(ledger, calls.find((c) => !ledger.of(c.event)?.confirm)!)}.`,
          () => {
            const c = calls.find((x) => x.state !== "pending");
            if (!c) return null;
            if (c.state === "resolved") return `${setting} Call ${c.label} ${c.outcome}, while ${fate(ledger, c)}. ${CONFIRM_HINT_HOLD}`;
            return `${setting} Call ${c.label} ${c.outcome}, although nothing had gone wrong yet: ${fate(ledger, c)}.`;
          },
        );
        // The network fails with the confirms in flight.
        w.proxy.cut();
        const cutAt = performance.now();
        const since = () => ms(performance.now() - cutAt);
        await pulse.until(
          () => calls.every((c) => c.state !== "pending"),
          CUT_SETTLE_MS,
          () => {
            const c = calls.find((x) => x.state === "pending")!;
            return `${setting} Then the connection dropped, with their confirms still held. ${since()} later, call ${c.label} had still not settled (its deadline, ${DEFAULT_CONFIRM_TIMEOUT_MS} ms, was far off). When the channel closes, every unconfirmed publish must reject at once.`;
          },
          () => {
            const c = calls.find((x) => x.state === "resolved");
            return c
              ? `${setting} Then the connection dropped before the broker's confirms reached your code, and call ${c.label} ${c.outcome}. Nobody knows whether the broker kept that message: the caller must hear "failed" so that it can publish again (consumers de-duplicate by messageId).`
              : null;
          },
        );

        // The publisher is on a dead connection now: a new publish must fail, not hang or pretend.
        const after = new Call(`#${warm + m + 1}`, key, makeEvent(t.rng, warm + m), pub, pulse);
        await pulse.until(
          () => after.state !== "pending",
          CUT_SETTLE_MS,
          () => `After the connection dropped, a new publish("${key}", …) had not settled within ${ms(CUT_SETTLE_MS)}: it must reject, since the message cannot reach the broker.`,
        );
        if (after.state === "resolved") {
          t.fail(`After the connection dropped, a new publish("${key}", …) ${after.outcome}, although its message could not reach the broker. Do not swallow the error from the channel: reject.`);
        }
        // Shutting down a publisher on a dead connection: nothing is left to close.
        try {
          await t.within("close() after the connection dropped", CUT_SETTLE_MS, pub.close());
        } catch (e) {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`After the connection dropped, close() rejected with ${errText(e)}. Its channel was already gone with the connection: close() has nothing left to close and must resolve (a service's shutdown calls close() on every publisher, whatever state it is in).`);
        }
      },
    },
    {
      name: "a channel the broker closes fails its pending publishes, and nothing crashes or hangs",
      hint: "When the broker closes the channel (say, a publish to an exchange nobody may publish to), amqplib emits \"error\" on the channel and then \"close\". With no \"error\" listener, that emit throws inside amqplib and fails the whole connection (or crashes the process). The callbacks of the messages still unconfirmed then get an error: reject those publishes, never resolve them. The channel is gone after that: publish() must reject at once, close() has nothing left to close and resolves, and other publishers on the connection are not affected.",
      timeoutMs: 15000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, ledger, pulse } = w;
        const doomedEx = w.exchange;
        const otherEx = t.names.exchange("other");
        // Two publishers on one connection; which one is created first (and so which channel
        // numbers each gets) comes from the seed. Only the first one's exchange is taken away.
        const doomedFirst = t.rng.next() < 0.5;
        const doomed = doomedFirst ? await newPublisher(t, w.host, w.conn, doomedEx) : undefined;
        const other = await newPublisher(t, w.host, w.conn, otherEx);
        const pub = doomed ?? (await newPublisher(t, w.host, w.conn, doomedEx));
        const [key, otherKey] = twoKeys(t.rng);
        const qd = t.names.queue("doomed");
        const qo = t.names.queue("other");
        await Promise.all([obs.queue(t, qd, doomedEx, [key]), obs.queue(t, qo, otherEx, [otherKey])]);

        // The steady state on both.
        const warm = t.rng.int(1, 3);
        const steady = await publishInTurn(t, pub, pulse, key, Array.from({ length: warm }, (_, i) => makeEvent(t.rng, `D${i + 1}`)), "D");
        const steadyO = await publishInTurn(t, other, pulse, otherKey, [makeEvent(t.rng, "O1")], "O");

        // Publishes in flight on both, the broker's acks for them held at the proxy.
        ledger.hold();
        const nA = t.rng.int(1, 3);
        const nO = t.rng.int(1, 2);
        const nB = t.rng.int(2, 4);
        const acked = Array.from({ length: nA }, (_, i) => new Call(`D${warm + i + 1}`, key, makeEvent(t.rng, `D${warm + i + 1}`), pub, pulse));
        const others = Array.from({ length: nO }, (_, i) => new Call(`O${i + 2}`, otherKey, makeEvent(t.rng, `O${i + 2}`), other, pulse));
        const sure = [...acked, ...others];
        const lost: Call[] = [];
        const labels = (cs: Call[]) => `${cs[0]!.label}${cs.length > 1 ? `–${cs[cs.length - 1]!.label}` : ""}`;
        const intro = `Two publishers shared one connection: D on exchange "${doomedEx}", O on "${otherEx}". After ${warm} publish(es) on D and one on O had resolved, the grader held the broker's confirms at the proxy and published ${labels(acked)} on D and ${labels(others)} on O.`;
        let setting = intro;
        const sealed = () => `${intro} Once the broker had acked them (the acks waiting at the proxy), the grader deleted D's exchange and declared it again as an internal exchange, which no client may publish to; then it called publish() on D ${nB} more times (${labels(lost)}). The broker closed D's channel for that (${ledger.brokerCloses[0] ? `${ledger.brokerCloses[0].code} ${ledger.brokerCloses[0].text}` : "a channel error"}), and the grader let the held frames through, in the order the broker sent them: the acks first, then the close.`;
        const escapedMessage = () => `${setting} Then an error escaped your code: ${errText(w.host.escaped[0])}. A channel the broker closes emits "error" on the channel object, and an "error" event nobody listens to is thrown: it would crash the service. Listen for "error" on every channel you open.`;
        const judge = (): string | null => {
          if (w.host.escaped.length) return escapedMessage();
          for (const c of sure) {
            const wired = ledger.of(c.event);
            if (c.state === "resolved" && wired?.held && ledger.holding) return `${setting} ${c.label} ${c.outcome}, while ${fate(ledger, c)}. ${CONFIRM_HINT_HOLD}`;
            if (c.state === "rejected") {
              return `${setting} ${c.label} ${c.outcome}, while ${fate(ledger, c)}${c.key === otherKey ? `. O's channel was never closed: another publisher's channel error must not touch it` : `: its ack reached your connection before the channel closed, so the broker has the message`}. Only the publishes still unconfirmed when the channel closes fail.`;
            }
          }
          for (const c of lost) {
            const wired = ledger.of(c.event);
            if (c.state === "resolved") {
              return `${setting} ${c.label} ${c.outcome}, while ${fate(ledger, c)}. The broker never took that message: the caller must hear "failed".`;
            }
            if (c.state === "rejected" && ledger.holding && !wired?.closedBy?.reachedClient) {
              return `${setting} ${c.label} ${c.outcome}, before anything about its message had reached your code (${fate(ledger, c)}, and that frame was still held at the proxy). Until its deadline, only its confirm or its channel closing settles a publish.`;
            }
          }
          return null;
        };
        await pulse.until(
          () => sure.every((c) => ledger.of(c.event)?.confirm),
          3000,
          () => {
            const c = sure.find((x) => !ledger.of(x.event)?.confirm)!;
            return `${intro} Within 3 s the broker had not answered for ${c.label}: ${fate(ledger, c)}.`;
          },
          judge,
        );

        const afterSeal = async () => {
          for (let i = 0; i < nB; i++) lost.push(new Call(`D${warm + nA + i + 1}`, key, makeEvent(t.rng, `D${warm + nA + i + 1}`), pub, pulse));
          setting = sealed();
          await pulse.until(
            () => lost.every((c) => ledger.of(c.event)?.closedBy),
            3000,
            () => {
              const c = lost.find((x) => !ledger.of(x.event)?.closedBy)!;
              return `${sealed()} But within 3 s the broker had not closed the channel of ${c.label}: ${fate(ledger, c)}.`;
            },
            judge,
          );
          setting = sealed();
          // Anything the learner's code does without hearing from the broker is done by now.
          await w.host.turns();
          await pulse.watch(50, judge);

          ledger.release();
          await pulse.until(
            () => [...sure, ...lost].every((c) => c.state !== "pending"),
            SETTLE_MS,
            () => {
              const c = lost.find((x) => x.state === "pending");
              if (c) return `${setting} ${ms(SETTLE_MS)} after the close reached your connection, ${c.label} was ${c.outcome} (${fate(ledger, c)}; its deadline, ${DEFAULT_CONFIRM_TIMEOUT_MS} ms, was far off). When the channel closes, every unconfirmed publish on it must reject at once.`;
              const s = sure.find((x) => x.state === "pending")!;
              return `${setting} ${ms(SETTLE_MS)} later, ${s.label} was ${s.outcome}, although ${fate(ledger, s)}.`;
            },
            judge,
          );
          await w.host.turns();
          const after = judge();
          if (after) t.fail(after);
          for (const c of sure) mustHaveResolved(t, c, ` although ${fate(ledger, c)}.`);

          // The other publisher's channel is untouched: it keeps publishing.
          const o = new Call(`O${nO + 2}`, otherKey, makeEvent(t.rng, `O${nO + 2}`), other, pulse);
          await settleAll(t, [o], 5000, "publish() on the other publisher");
          mustHaveResolved(t, o, ` on publisher O, after D's channel had been closed by the broker. A channel error concerns one channel: the connection and the other publishers' channels keep working.`);

          // D's channel is gone: a new publish must fail, not hang until its deadline, not pretend.
          const next = new Call(`D${warm + nA + nB + 1}`, key, makeEvent(t.rng, `D${warm + nA + nB + 1}`), pub, pulse);
          await pulse.until(
            () => next.state !== "pending",
            CUT_SETTLE_MS,
            () => `${setting} ${labels(lost)} rejected. Then a new publish("${key}", …) on D had still not settled ${ms(CUT_SETTLE_MS)} later (${fate(ledger, next)}): the broker closed D's channel, so it must reject at once, not wait for its deadline (${DEFAULT_CONFIRM_TIMEOUT_MS} ms).`,
            () => (w.host.escaped.length ? escapedMessage() : null),
          );
          if (next.state === "resolved") {
            t.fail(`${setting} ${labels(lost)} rejected. Then a new publish("${key}", …) on D ${next.outcome}, while ${fate(ledger, next)}: nothing can be published to that exchange now, so it must reject.`);
          }

          // Closing a publisher whose channel the broker already closed: nothing is left to close.
          try {
            await t.within("close() on D, whose channel the broker had closed", CUT_SETTLE_MS, pub.close());
          } catch (e) {
            if ((e as Error)?.name === "CheckFailure") throw e;
            t.fail(`${setting} Then close() on D rejected with ${errText(e)}. Its channel was already closed by the broker: close() has nothing left to close and must resolve (a service's shutdown calls close() on every publisher, whatever state it is in).`);
          }
          await w.host.turns();
          if (w.host.escaped.length) t.fail(escapedMessage());

          // What the broker acked is on the broker: the receipts name those messages.
          const dCalls = [...steady, ...acked];
          receiptsMatch(t, dCalls, matchMessages(t, await obs.collect(qd, dCalls.length), dCalls.map((c) => c.event), "The queue that was bound to D's exchange"), "that queue");
          const oCalls = [...steadyO, ...others, o];
          receiptsMatch(t, oCalls, matchMessages(t, await obs.collect(qo, oCalls.length), oCalls.map((c) => c.event), "The queue bound to O's exchange"), "that queue");
        };

        // The exchange is taken away; the next publishes on D get the channel closed under them.
        await obs.sealExchange(doomedEx);
        const links = w.proxy.brokerConnections;
        const connectionGone = () =>
          frames(w.proxy, "toBroker", 10, 50) > 0
            ? `your code closed the connection (connection.close went to the broker). The connection belongs to the caller, and a channel error concerns one channel: the other publishers on the connection must keep working.`
            : w.proxy.brokerConnections < links
              ? `the whole connection ended, without a connection.close from your code. That is what amqplib does when a channel's "error" event has no listener: the event throws inside amqplib's frame loop, which then fails the connection and every channel on it (in a service without this lab's safety net the error would crash the process). Listen for "error" on every channel you open.`
              : null;
        try {
          await afterSeal();
        } catch (e) {
          if (!(e instanceof CheckFailure)) throw e;
          // The learner's connection may be on its way down: give the proxy a moment to see it.
          await t.waitFor(connectionGone, { timeoutMs: 1000, message: "" }).catch(() => {});
          const gone = connectionGone();
          if (!gone) throw e;
          const seen = e.message.startsWith(setting) ? e.message.slice(setting.length).trim() : e.message;
          t.fail(`${setting} Then ${gone} What the grader saw first: ${seen}`);
        }
      },
    },
    {
      name: "close() closes the publisher's channels and nothing else",
      hint: "Every channel you open, close: in close(), or right after use if you open one per publish. The connection was handed to you and the exchange is shared with consumers: leave both alone.",
      timeoutMs: 10000,
      async run(t: T) {
        const w = await arrangeChaos(t);
        const { obs, exchange, proxy, pulse } = w;
        const pub = await newPublisher(t, w.host, w.conn, exchange);
        const key = keyText(randomKey(t.rng));
        const queue = t.names.queue("all");
        await obs.queue(t, queue, exchange, [key]);
        const calls = Array.from({ length: 3 }, (_, i) => new Call(`#${i + 1}`, key, makeEvent(t.rng, i), pub, pulse));
        await settleAll(t, calls, 5000, "3 publish() calls");
        for (const c of calls) mustHaveResolved(t, c, ".");
        await t.within("close()", 3000, pub.close());

        // Counted on the wire: channel.open from the client against channel.close either way.
        const opened = () => frames(proxy, "toBroker", 20, 10);
        const closed = () => frames(proxy, "toBroker", 20, 40) + frames(proxy, "toClient", 20, 40);
        const closedConnection = () => frames(proxy, "toBroker", 10, 50) > 0;
        const connectionMessage = `close() closed the connection it was given (connection.close went to the broker). The connection belongs to the caller, who may share it with other publishers and consumers: close only the channels the publisher opened.`;
        await w.host.turns();
        await pulse.until(
          () => opened() - closed() === 0,
          1000,
          () => `After close() resolved, ${opened() - closed()} channel(s) the publisher opened on the connection are still open (opened ${opened()}, closed ${closed()}). Channels left open pile up until the connection hits its channel limit.`,
          () => (closedConnection() ? connectionMessage : null),
        );
        if (closedConnection()) t.fail(connectionMessage);
        // The exchange outlives its publishers: consumers' bindings hang on it.
        if (!(await obs.exchangeExists(exchange))) {
          t.fail(`After close(), exchange "${exchange}" no longer exists. It is durable for a reason: consumers' queues are bound to it, and deleting it drops their bindings. close() closes channels only.`);
        }

        // The connection still works for its owner: a new publisher on it publishes.
        let next: Publisher;
        try {
          next = await newPublisher(t, w.host, w.conn, exchange);
        } catch (e) {
          if (closedConnection()) t.fail(connectionMessage);
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`After close(), createPublisher() on the same connection failed (${errText(e)}): close() must leave the connection open for its owner.`);
        }
        const call = new Call("#4", key, makeEvent(t.rng, 4), next, pulse);
        await settleAll(t, [call], 5000, "publish() on a new publisher after close()");
        mustHaveResolved(t, call, ` on a new publisher, created on the same connection after the first publisher's close(): close() must leave the connection usable.`);
        if (closedConnection()) t.fail(connectionMessage);
      },
    },
  ],
});
