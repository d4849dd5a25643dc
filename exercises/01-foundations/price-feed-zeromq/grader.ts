import { defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { PriceFeedZeromqSubmission, Tick } from "../../../src/contracts/price-feed-zeromq.ts";
import {
  ARRIVE_MS,
  CALL_MS,
  CHAINS,
  GraderPub,
  Recorder,
  SYMBOLS,
  Tap,
  Ticker,
  describeIds,
  endpoint,
  feed,
  judgeCalls,
  learnerCall,
  publishAll,
  settle,
  sleep,
  startPublisher,
  startSubscriber,
  tickId,
  ticksFor,
  topicOf,
  track,
  waitUntil,
  warmUp,
} from "./grader-util.ts";

/**
 * How long waitForSubscriber() must stay pending while the grader's subscriber is connected but
 * has not subscribed. Longer than any fixed wait a publisher might put in its place (the ZeroMQ
 * guide's examples sleep for one second), and than the connect-then-handshake a connection event
 * would report.
 */
const HOLD_MS = 1500;
/** How long a waiter whose symbol no live subscription matches must stay pending (a logic error shows at once). */
const STILL_MS = 300;
/**
 * What may pile up for a stalled subscriber beyond the two high-water marks: the bytes in flight in
 * the Unix socket (about 200 KB of kernel buffer, some 150 ticks of 1.3 KB) and ZeroMQ's batching.
 * Measured here at under 120 for every mark from 20 to 1000. The default mark, 1000, and no mark at
 * all (0: unlimited) are far above any bound the checks allow.
 */
const SLACK = 300;
/** Big ticks for the high-water-mark checks (30 book levels: about 1.3 KB of JSON), so the kernel's buffers hold few. */
const DEPTH = 30;
/** A burst of publish() calls: past zeromq.js's 512 synchronous sends in a row, three times over. */
const BURST = 1600;
/** How long the grader's sends must keep failing before it takes the subscriber's side as full. */
const FULL_MS = 300;

export default defineGrader<PriceFeedZeromqSubmission>({
  exports: { startPublisher: "function", subscribe: "function" },
  // No broker: checks share nothing but the CPU, and mostly wait. Four at a time.
  concurrency: 4,
  checks: [
    {
      name: "publish sends each tick as two frames: price.<SYMBOL>| and the JSON body",
      hint: "socket.send([`price.${tick.symbol}|`, JSON.stringify(tick)]): the topic frame first, ended by |, so that a subscription to price.AA| never matches price.AAPL|.",
      timeoutMs: 10000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const host = await t.learnerHost();
        const pub = await startPublisher(t, host, ep, 50000);
        // Subscribed to everything, to see whatever the publisher sends, well-formed or not.
        const tap = await Tap.connect(t, ep, { subscribe: [""] });
        const ticker = new Ticker(t.rng);
        await warmUp(t, pub, [tap], ticker);
        const symbols = t.rng.shuffle(["A", "AA", "AAPL", "MSFT", "Z9", ...t.rng.shuffle(["T", "TS", "IBM", "M"]).slice(0, 2)]);
        const ticks = symbols.map((s, i) => ticker.tick(s, { book: i % 3 === 0 }));
        await learnerCall(t, "publish()", publishAll(pub, ticks));
        tap.start();
        await waitUntil(t, () => feed(tap).length >= ticks.length, ARRIVE_MS, () => `The publisher's publish() was called ${ticks.length} times; the grader's subscriber received ${feed(tap).length} messages within ${ARRIVE_MS / 1000} s.`, [host]);
        await tap.pause();
        const got = feed(tap);
        ticks.forEach((tick, i) => {
          const m = got[i]!;
          const want = JSON.stringify(tick);
          if (m.frames.length !== 2) t.fail(`The tick ${describeValue(tickId(tick))} arrived as ${m.frames.length} frame(s) (${describeValue(m.frames.map((f) => f.toString("utf8")), 120)}); a tick is exactly two: the topic, then the JSON body.`);
          if (m.topic !== topicOf(tick.symbol)) {
            t.fail(
              `The tick for ${describeValue(tick.symbol)} was sent with topic ${describeValue(m.topic)}; expected ${describeValue(topicOf(tick.symbol))}. ZeroMQ filters on a byte prefix of the first frame, so the topic ends with "|": otherwise a subscription to price.AA would also take price.AAPL.`,
            );
          }
          if (m.body !== want) t.fail(`The tick ${describeValue(tickId(tick))} arrived with body ${describeValue(m.body, 100)}, expected exactly JSON.stringify(tick): ${describeValue(want, 100)}.`);
        });
        if (got.length > ticks.length) t.fail(`The publisher sent ${got.length} messages for ${ticks.length} calls to publish(): one message per tick.`);
        // A burst, as a feed produces one: calls come faster than sends finish. zeromq.js allows
        // one send in progress per socket, and makes every 513th send in a row wait a turn.
        const burst = Array.from({ length: BURST }, () => ticker.tick(t.rng.pick(SYMBOLS)));
        tap.start();
        await t.within("publish()", 10000, publishAll(pub, burst)).catch((e: unknown) => {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(
            `The grader called publish() ${BURST} times in a row without waiting for each call, as a feed does, and a call rejected: ${describeValue((e as Error)?.message ?? e)}. ` +
              `zeromq.js refuses a send while another send on the same socket is still in progress ("busy writing"): queue the sends, each after the one before.`,
          );
        });
        const lastId = tickId(burst[burst.length - 1]!);
        await waitUntil(t, () => tap.has(lastId), ARRIVE_MS, () => `After a burst of ${BURST} calls to publish(), the last tick did not reach the grader's subscriber within ${ARRIVE_MS / 1000} s.`, [host]);
        await tap.pause();
        const burstIds = new Set(burst.map(tickId));
        const arrived = feed(tap).filter((g) => g.id !== null && burstIds.has(g.id)).length;
        if (arrived !== BURST) t.fail(`Of a burst of ${BURST} ticks (to a subscriber that kept reading, with sendHighWaterMark 50000), ${arrived} arrived: each call to publish() sends its tick.`);
        // close(): the socket goes, and the subscriber connected to it sees the publisher leave.
        await learnerCall(t, "close()", pub.close());
        await waitUntil(t, () => tap.disconnects > 0, 2000, () => `The publisher's close() resolved, but 2 s later the grader's subscriber was still connected to it: close the socket.`, [host]);
      },
    },
    {
      name: "a subscriber subscribes to price.<SYMBOL>| and gets exactly its symbols' ticks",
      hint: "One socket.subscribe(`price.${symbol}|`) per symbol. A subscription is a byte prefix: without the |, price.AA also takes price.AAPL| and price.AAL|.",
      timeoutMs: 10000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const gp = await GraderPub.bind(t, ep, 100000);
        const host = await t.learnerHost();
        const chain = t.rng.pick(CHAINS);
        // Always one symbol that is a prefix of others the grader publishes (AA of AAPL and AAL).
        const symbols = t.rng.shuffle([chain[t.rng.int(0, 1)]!, t.rng.pick(["IBM", "Z9"])]);
        const rec = new Recorder();
        await startSubscriber(t, host, ep, symbols, rec, 100000);
        const expect = symbols.map(topicOf).sort();
        await waitUntil(t, () => expect.every((p) => gp.live().includes(p)) || gp.live().some((p) => !expect.includes(p)), ARRIVE_MS, () => `subscribe(…, ${describeValue(symbols)}, …) resolved; within ${ARRIVE_MS / 1000} s the grader's publisher received the subscriptions ${describeValue(gp.live())}, expected ${describeValue(expect)}.`, [host]);
        await sleep(50);
        await settle(host);
        const live = gp.live().sort();
        if (live.join("\n") !== expect.join("\n")) {
          const wide = live.filter((p) => !expect.includes(p));
          const why = wide.includes("")
            ? ' The empty subscription takes every message on the socket: the filtering must happen at the publisher, by topic.'
            : wide.some((p) => !p.endsWith("|"))
              ? ` A subscription is a byte prefix: ${describeValue(wide.find((p) => !p.endsWith("|")))} also matches the topics of every symbol that starts the same way. End it with "|".`
              : "";
          t.fail(`subscribe(…, ${describeValue(symbols)}, …) subscribed to ${describeValue(live)}; expected exactly ${describeValue(expect)}.${why}`);
        }
        const ticker = new Ticker(t.rng);
        const all = ticksFor(t, ticker, SYMBOLS, t.rng.int(24, 36));
        const last = ticker.tick(t.rng.pick(symbols));
        const noise: (string | Buffer)[][] = [[`prices.${symbols[0]}|`, "{}"], ["heartbeat", "{}"]];
        for (const tick of all) {
          if (t.rng.int(0, 8) === 0) await gp.send(noise[t.rng.int(0, noise.length - 1)]!);
          await gp.sendTicks([tick]);
        }
        await gp.sendTicks([last]);
        const want = [...all.filter((tk) => symbols.includes(tk.symbol)), last];
        await waitUntil(t, () => rec.ids().includes(tickId(last)), ARRIVE_MS, () => `The subscriber asked for ${describeValue(symbols)}: within ${ARRIVE_MS / 1000} s, ${judgeCalls(rec, want) ?? "onTick did not get every tick"}`, [host]);
        await settle(host);
        const problem = judgeCalls(rec, want);
        if (problem) t.fail(`The subscriber asked for ${describeValue(symbols)} and the grader published ticks of ${SYMBOLS.length} symbols: ${problem}`);
      },
    },
    {
      name: "a subscriber to every symbol (\"*\") subscribes to price. and gets every tick",
      hint: "Every symbol is the prefix price.: it matches price.AAPL| and every other tick, and nothing else. The empty subscription takes everything on the socket; price without the dot takes prices.… too.",
      timeoutMs: 10000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const gp = await GraderPub.bind(t, ep, 100000);
        const host = await t.learnerHost();
        const rec = new Recorder();
        await startSubscriber(t, host, ep, ["*"], rec, 100000);
        await waitUntil(t, () => gp.live().length > 0, ARRIVE_MS, () => `subscribe(…, ["*"], …) resolved; within ${ARRIVE_MS / 1000} s the grader's publisher received no subscription from it.`, [host]);
        await sleep(50);
        await settle(host);
        const live = gp.live();
        if (live.length !== 1 || live[0] !== "price.") {
          const why = live.includes("") ? " The empty subscription takes every message on the socket, ticks or not." : live.includes("price") ? ' "price" (no dot) also matches topics such as "prices.AAPL|".' : "";
          t.fail(`subscribe(…, ["*"], …) subscribed to ${describeValue(live)}; expected exactly ["price."].${why}`);
        }
        const ticker = new Ticker(t.rng);
        const all = ticksFor(t, ticker, SYMBOLS, t.rng.int(20, 30));
        for (const tick of all) {
          if (t.rng.int(0, 6) === 0) await gp.send([t.rng.pick(["prices.AAPL|", "heartbeat", "news.AAPL|"]), "{}"]);
          await gp.sendTicks([tick]);
        }
        const last = all[all.length - 1]!;
        await waitUntil(t, () => rec.ids().includes(tickId(last)), ARRIVE_MS, () => `The subscriber asked for every symbol: within ${ARRIVE_MS / 1000} s, ${judgeCalls(rec, all) ?? "onTick did not get every tick"}`, [host]);
        await settle(host);
        const problem = judgeCalls(rec, all);
        if (problem) t.fail(`The subscriber asked for every symbol: ${problem}`);
      },
    },
    {
      name: "a late subscriber gets none of the ticks published before its subscription arrived",
      hint: "PUB/SUB keeps nothing: a tick with no matching subscription is dropped at once, never kept for whoever joins later. And publish() never waits for a subscriber.",
      timeoutMs: 12000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const host = await t.learnerHost();
        const pub = await startPublisher(t, host, ep, 1000);
        const ticker = new Ticker(t.rng);
        // Nobody is connected: every publish() must still return at once.
        const early = ticksFor(t, ticker, SYMBOLS, t.rng.int(10, 30));
        const before = Date.now();
        await t.within("publish() with no subscriber connected", 3000, publishAll(pub, early)).catch((e: unknown) => {
          if ((e as Error)?.name === "CheckFailure") t.fail(`With no subscriber connected, ${early.length} calls to publish() did not all finish within 3 s: publish() must never wait for a subscriber (a tick nobody subscribes to is dropped).`);
          t.fail(`publish() threw with no subscriber connected: ${describeValue((e as Error)?.message ?? e)}. A tick nobody subscribes to is simply dropped.`);
        });
        // The slow joiner: connected, but its subscription has not reached the publisher yet.
        const tap = await Tap.connect(t, ep);
        await tap.connected(t, "A late subscriber");
        const gap = ticksFor(t, ticker, SYMBOLS, t.rng.int(5, 10));
        await learnerCall(t, "publish()", publishAll(pub, gap));
        tap.socket.subscribe("price.");
        await warmUp(t, pub, [tap], ticker);
        const live = ticksFor(t, ticker, SYMBOLS, t.rng.int(5, 10));
        await learnerCall(t, "publish()", publishAll(pub, live));
        tap.start();
        const lastId = tickId(live[live.length - 1]!);
        await waitUntil(t, () => tap.has(lastId), ARRIVE_MS, () => `After the late subscriber's subscription arrived, ${live.length} ticks were published; it received ${feed(tap).length} messages within ${ARRIVE_MS / 1000} s.`, [host]);
        await tap.pause();
        const old = new Set([...early, ...gap].map(tickId));
        const history = feed(tap).filter((g) => g.id !== null && old.has(g.id));
        if (history.length) {
          const fromGap = history.filter((g) => gap.some((tk) => tickId(tk) === g.id)).length;
          t.fail(
            `${early.length} ticks were published with nobody connected (taking ${Date.now() - before} ms), then ${gap.length} more while a subscriber was connected but had not subscribed yet; after it subscribed it received ${history.length} of those (${describeIds(history.map((g) => g.id!), 4)}${fromGap ? `, ${fromGap} from the second group` : ""}). ` +
              `The publisher kept ticks for later: a live feed has no history, and ZeroMQ drops a tick that matches no subscription at that moment.`,
          );
        }
        const got = feed(tap).map((g) => g.id);
        const want = live.map(tickId);
        if (got.join("\n") !== want.join("\n")) t.fail(`After its subscription arrived, the late subscriber received ${describeIds(got.map(String))}; expected exactly the ${want.length} ticks published since: ${describeIds(want)}.`);
      },
    },
    {
      name: "waitForSubscriber() resolves only once a matching subscription has arrived, and then no tick is lost",
      hint: "Use an XPublisher: it receives every subscription as a message (byte 1 or 0, then the prefix). Keep the live prefixes in a set (delete on 0) and resolve a waiter when `price.${symbol}|`.startsWith(prefix) for one of them. A sleep, or the connect event, is not a subscription.",
      timeoutMs: 15000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const host = await t.learnerHost();
        const pub = await startPublisher(t, host, ep, 1000);
        const ticker = new Ticker(t.rng);
        const [short, mid, long] = t.rng.pick(CHAINS) as [string, string, string];
        const tap = await Tap.connect(t, ep);
        await tap.connected(t, "A subscriber");
        const waiting = new Map([short, mid, long].map((s) => [s, track(Promise.resolve(pub.waitForSubscriber(s)))]));
        const pending = (s: string) => waiting.get(s)!.state() === "pending";
        const check = (when: string, stillPending: string[]) => {
          for (const [s, w] of waiting) if (w.state() === "rejected") t.fail(`waitForSubscriber(${describeValue(s)}) threw ${when}: ${describeValue((w.error() as Error)?.message ?? w.error())}.`);
          const early = stillPending.find((s) => !pending(s));
          if (early) return early;
          return null;
        };
        // 1. Connected (the handshake is done), nothing subscribed, for longer than any fixed wait.
        await sleep(HOLD_MS);
        await settle(host);
        const e1 = check("while no subscription existed", [short, mid, long]);
        if (e1) t.fail(`A subscriber connected to the publisher but did not subscribe, and waitForSubscriber(${describeValue(e1)}) resolved within ${HOLD_MS} ms: it must wait for a subscription, which only an XPUB socket reports (a timer, or the connection itself, is not one). A tick sent then is lost: the slow-joiner problem.`);
        // 2. The middle symbol's topic: it matches neither the shorter symbol nor the longer one.
        tap.socket.subscribe(topicOf(mid));
        const sendNow = async (symbol: string, why: string) => {
          const ticks = Array.from({ length: t.rng.int(3, 8) }, () => ticker.tick(symbol));
          await learnerCall(t, "publish()", publishAll(pub, ticks));
          await waitUntil(t, () => ticks.every((tk) => tap.has(tickId(tk))), ARRIVE_MS, () => `${why}, the grader had the publisher publish ${ticks.length} ticks of ${describeValue(symbol)} at once; the subscriber received ${ticks.filter((tk) => tap.has(tickId(tk))).length} of them within ${ARRIVE_MS / 1000} s. When waitForSubscriber() resolves, the subscription must already be in force at the publisher.`, [host]);
        };
        tap.start();
        await waitUntil(t, () => !pending(mid), ARRIVE_MS, () => `The grader's subscriber subscribed to ${describeValue(topicOf(mid))}; within ${ARRIVE_MS / 1000} s waitForSubscriber(${describeValue(mid)}) did not resolve.`, [host]);
        await sendNow(mid, `As soon as waitForSubscriber(${describeValue(mid)}) resolved`);
        await sleep(STILL_MS);
        await settle(host);
        const e2 = check(`after a subscription to ${topicOf(mid)}`, [short, long]);
        if (e2) {
          t.fail(
            `The only subscription was ${describeValue(topicOf(mid))}, and waitForSubscriber(${describeValue(e2)}) resolved: ${describeValue(topicOf(e2))} does not start with ${describeValue(topicOf(mid))}, so its ticks reach nobody. ` +
              `A subscription matches a topic when the topic starts with it, delimiter included.`,
          );
        }
        // 3. A prefix without the delimiter (price.A of A, AA and AAPL): the others resolve.
        const wide = `price.${short}`;
        tap.socket.subscribe(wide);
        await waitUntil(t, () => !pending(short) && !pending(long), ARRIVE_MS, () => `The grader's subscriber subscribed to ${describeValue(wide)}, a prefix of ${describeValue(topicOf(short))} and ${describeValue(topicOf(long))}; within ${ARRIVE_MS / 1000} s waitForSubscriber() still had not resolved for ${describeValue([short, long].filter(pending))}. A subscription covers every topic that starts with it, whatever it ends with.`, [host]);
        await sendNow(long, `As soon as waitForSubscriber(${describeValue(long)}) resolved on a subscription to ${describeValue(wide)}`);
        // A subscription already in force: a new waiter resolves at once, with no new subscription message.
        const now = track(Promise.resolve(pub.waitForSubscriber(mid)));
        await waitUntil(t, () => now.state() !== "pending", 1000, () => `Subscriptions to ${describeValue(topicOf(mid))} and ${describeValue(wide)} were in force (earlier waiters had resolved on them), and a new waitForSubscriber(${describeValue(mid)}) did not resolve within 1 s: it must resolve at once when a live subscription already matches.`, [host]);
        // 4. The subscriber goes away: its subscriptions no longer count.
        await tap.close();
        await sleep(400);
        await settle(host);
        const again = track(Promise.resolve(pub.waitForSubscriber(short)));
        await sleep(STILL_MS);
        await settle(host);
        if (again.state() !== "pending") {
          t.fail(`The only subscriber closed its socket (the publisher's XPUB socket reports its subscriptions withdrawn), and 0.4 s later waitForSubscriber(${describeValue(short)}) resolved at once: a subscription that was withdrawn (a message with byte 0) no longer counts.`);
        }
        // A new subscriber to everything on the socket: the empty subscription covers every topic.
        const tap2 = await Tap.connect(t, ep, { subscribe: [""] });
        tap2.start();
        await waitUntil(t, () => again.state() !== "pending", ARRIVE_MS, () => `A new subscriber subscribed to "" (the empty subscription: every message on the socket); within ${ARRIVE_MS / 1000} s waitForSubscriber(${describeValue(short)}) did not resolve. The empty prefix is a prefix of every topic.`, [host]);
        const ticks = Array.from({ length: t.rng.int(3, 6) }, () => ticker.tick(short));
        await learnerCall(t, "publish()", publishAll(pub, ticks));
        await waitUntil(t, () => ticks.every((tk) => tap2.has(tickId(tk))), ARRIVE_MS, () => `A new subscriber subscribed; waitForSubscriber() resolved; of the ${ticks.length} ticks then published it received ${ticks.filter((tk) => tap2.has(tickId(tk))).length}.`, [host]);
      },
    },
    {
      name: "a stalled subscriber never blocks the publisher: ticks beyond the high-water mark are dropped",
      hint: "Set sendHighWaterMark on the XPublisher before bind(). A PUB socket drops what a full subscriber queue cannot take; noDrop, or a mark of 0 (no limit), turns a stalled subscriber into a blocked publisher or unbounded memory.",
      timeoutMs: 30000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const host = await t.learnerHost();
        const hwm = t.rng.int(20, 150);
        const pub = await startPublisher(t, host, ep, hwm);
        const ticker = new Ticker(t.rng);
        const rcv = 10;
        const stalled = await Tap.connect(t, ep, { receiveHighWaterMark: rcv, subscribe: ["price."] });
        const healthy = await Tap.connect(t, ep, { subscribe: ["price."] });
        await warmUp(t, pub, [stalled, healthy], ticker);
        healthy.start();
        // The stalled one reads nothing from here on.
        const n = 1500;
        const flood = ticksFor(t, ticker, SYMBOLS, n, DEPTH);
        const started = Date.now();
        await t.within("publish()", 15000, publishAll(pub, flood)).catch((e: unknown) => {
          if ((e as Error)?.name === "CheckFailure") {
            t.fail(
              `One subscriber stopped reading; the grader then called publish() ${n} times and not all of them returned within 15 s (the other subscriber had received ${feed(healthy).length}). ` +
                `A PUB socket drops ticks for a subscriber whose queue is full; with noDrop (or a socket that blocks), one stalled subscriber stops the whole feed.`,
            );
          }
          t.fail(
            `One subscriber stopped reading; the grader then called publish() ${n} times and a call rejected: ${describeValue((e as Error)?.message ?? e)}. ` +
              `A full subscriber queue is not the publisher's error: PUB/SUB drops the tick for that subscriber (noDrop makes the socket refuse it instead, EAGAIN).`,
          );
        });
        const took = Date.now() - started;
        await sleep(200);
        const final = ticker.tick(t.rng.pick(SYMBOLS));
        await learnerCall(t, "publish()", Promise.resolve(pub.publish(final)));
        await waitUntil(t, () => healthy.has(tickId(final)), ARRIVE_MS, () => `While one subscriber was stalled, a tick published after ${n} others did not reach the subscriber that kept reading within ${ARRIVE_MS / 1000} s: the publisher is held up by the stalled one.`, [host]);
        await healthy.pause();
        // Now the stalled one reads what was queued for it.
        await stalled.drain(300);
        const queued = feed(stalled).filter((g) => g.id !== tickId(final));
        const bound = hwm + rcv + SLACK;
        if (queued.length > bound) {
          t.fail(
            `One subscriber read nothing while ${n} ticks of about ${JSON.stringify(flood[0]).length} bytes were published (in ${took} ms); when it started reading again it got ${queued.length} of them. ` +
              `With sendHighWaterMark ${hwm} (and its receive mark ${rcv}) at most about ${bound} can have waited for it: the publisher queued ticks without bound instead of dropping them. Set sendHighWaterMark on the socket, before bind(), to options.sendHighWaterMark (0 means no limit).`,
          );
        }
        stalled.start();
        const after = ticker.tick(t.rng.pick(SYMBOLS));
        await learnerCall(t, "publish()", Promise.resolve(pub.publish(after)));
        await waitUntil(t, () => stalled.has(tickId(after)), ARRIVE_MS, () => `The stalled subscriber read its backlog and caught up; a tick published then did not reach it within ${ARRIVE_MS / 1000} s.`, [host]);
      },
    },
    {
      name: "a subscriber whose onTick stalls holds no more than its high-water mark",
      hint: "Set receiveHighWaterMark before connect(), and receive the next message only after `await onTick(tick)`: ticks then wait in ZeroMQ's bounded queues. A loop that keeps reading into an array of its own has no bound.",
      timeoutMs: 20000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const ghwm = 10;
        // noDrop: the grader's sends fail (EAGAIN) once the subscriber's side is full, so it knows
        // how much the subscriber took, at whatever speed its process reads.
        const gp = await GraderPub.bind(t, ep, ghwm, { noDrop: true });
        const host = await t.learnerHost();
        const rcv = t.rng.int(10, 100);
        const symbols = t.rng.pick([["*"], [t.rng.pick(SYMBOLS)]]);
        const traffic = symbols[0] === "*" ? SYMBOLS : symbols;
        const rec = new Recorder();
        await startSubscriber(t, host, ep, symbols, rec, rcv);
        await waitUntil(t, () => gp.live().length > 0, ARRIVE_MS, () => `subscribe() resolved; within ${ARRIVE_MS / 1000} s the grader's publisher received no subscription from it.`, [host]);
        await sleep(30);
        const k = t.rng.int(1, 3);
        rec.stallFrom = k;
        const ticker = new Ticker(t.rng);
        const warm = ticksFor(t, ticker, traffic, k);
        await gp.sendTicks(warm);
        await waitUntil(t, () => rec.calls.length >= k, ARRIVE_MS, () => `${k} tick(s) were published; onTick was called ${rec.calls.length} time(s) within ${ARRIVE_MS / 1000} s.`, [host]);
        const n = 1500;
        let taken = 0;
        let fullSince = 0;
        for (const tick of ticksFor(t, ticker, traffic, n, DEPTH)) {
          for (;;) {
            try {
              await gp.send([topicOf(tick.symbol), JSON.stringify(tick)]);
              taken++;
              fullSince = 0;
              break;
            } catch {
              fullSince ||= Date.now();
              if (Date.now() - fullSince > FULL_MS) break;
              await sleep(5);
            }
          }
          if (fullSince) break;
        }
        await sleep(100);
        await settle(host);
        const during = rec.calls.length;
        if (during > k) t.fail(`onTick was still running for tick ${k} when it was called again (${during - k} more calls): the next tick is received only after onTick has settled.`);
        rec.release();
        let last = -1;
        let quietSince = Date.now();
        await waitUntil(
          t,
          () => {
            if (rec.calls.length !== last) {
              last = rec.calls.length;
              quietSince = Date.now();
            }
            return Date.now() - quietSince > 300;
          },
          15000,
          () => `After onTick was let go, it kept being called for 15 s (${rec.calls.length} calls so far, ${n} ticks published while it was stalled).`,
          [host],
        );
        const held = rec.calls.length - k;
        const bound = ghwm + rcv + SLACK;
        if (held > bound) {
          t.fail(
            `onTick was stalled while the grader published ${taken === n ? `${n} ticks (the subscriber never pushed back)` : `ticks until the subscriber's side was full (${taken})`}; once let go, onTick was called ${held} more times. ` +
              `With receiveHighWaterMark ${rcv} (and the publisher's mark ${ghwm}) at most about ${bound} can have waited: ` +
              (taken === n
                ? `the subscriber kept reading while onTick was busy, into a backlog of its own that nothing bounds. Receive the next message only once onTick has settled.`
                : `its ZeroMQ queue held more than its mark allows. Set receiveHighWaterMark on the socket, before connect(), to options.receiveHighWaterMark (ZeroMQ's default is 1000).`),
          );
        }
        const seqs = rec.calls.map((c) => (c.tick as Tick).seq);
        if (seqs.some((s, i) => i > 0 && s <= seqs[i - 1]!)) t.fail(`onTick got the ticks out of order after the stall: seq ${describeValue(seqs.slice(0, 12))}….`);
        const final = ticker.tick(t.rng.pick(traffic));
        await gp.sendTicks([final]);
        await waitUntil(t, () => rec.ids().includes(tickId(final)), ARRIVE_MS, () => `After the backlog, a new tick did not reach onTick within ${ARRIVE_MS / 1000} s.`, [host]);
      },
    },
    {
      name: "onTick gets one tick at a time, skips what is not a tick, and close() unsubscribes",
      hint: "Await onTick before the next receive(); catch what it throws and go on; skip a message that is not two frames or whose body is not JSON. close(): stop the loop, then socket.close().",
      timeoutMs: 12000,
      async run(t) {
        const ep = endpoint(t, "feed.sock");
        const gp = await GraderPub.bind(t, ep, 100000);
        const host = await t.learnerHost();
        const symbols = t.rng.pick([["*"], t.rng.shuffle(SYMBOLS).slice(0, 2)]);
        const traffic = symbols[0] === "*" ? SYMBOLS : symbols;
        const rec = new Recorder();
        const sub = await startSubscriber(t, host, ep, symbols, rec, 1000);
        await waitUntil(t, () => gp.live().length > 0, ARRIVE_MS, () => `subscribe() resolved; within ${ARRIVE_MS / 1000} s the grader's publisher received no subscription from it.`, [host]);
        await sleep(30);
        const ticker = new Ticker(t.rng);
        const ticks = ticksFor(t, ticker, traffic, t.rng.int(14, 22));
        // Every run: three ticks whose onTick rejects, and seven messages that are not ticks.
        const failing = t.rng.shuffle(ticks.slice(0, -1)).slice(0, 3);
        rec.failIds = new Set(failing.map(tickId));
        rec.delayMs = () => t.rng.int(0, 3);
        const sym = () => topicOf(t.rng.pick(traffic));
        const bad: (string | Buffer)[][] = t.rng.shuffle([
          [sym(), t.rng.pick(["AAPL 189.20", "undefined", "<tick/>", '{"symbol":"AA","seq":'])],
          [sym(), ""],
          // JSON, but not an object: null, a number or a string, an array.
          [sym(), "null"],
          [sym(), t.rng.pick(["42", '"AAPL"', "true"])],
          [sym(), '[{"symbol":"AA","seq":1}]'],
          [sym()],
          [sym(), JSON.stringify(ticker.tick("BAD")), "extra"],
        ]);
        const slots = new Set(t.rng.shuffle(ticks.slice(0, -1).map((_, i) => i)).slice(0, bad.length));
        let b = 0;
        for (const [i, tick] of ticks.entries()) {
          if (slots.has(i)) await gp.send(bad[b++]!);
          await gp.sendTicks([tick]);
        }
        const last = ticks[ticks.length - 1]!;
        await waitUntil(t, () => rec.ids().includes(tickId(last)), ARRIVE_MS, () => `onTick rejected ${describeIds(failing.map(tickId))}, and messages that are not ticks came among the others: within ${ARRIVE_MS / 1000} s, ${judgeCalls(rec, ticks) ?? "onTick did not get every tick"}`, [host]);
        await settle(host);
        const overlap = rec.calls.find((c) => c.overlapped);
        if (overlap) t.fail(`onTick was called for ${describeValue(overlap.id)} while its call for an earlier tick was still running: one tick at a time, in order.`);
        const problem = judgeCalls(rec, ticks);
        if (problem) {
          t.fail(
            `onTick rejected ${describeIds(failing.map(tickId))}, and these messages that are not ticks came among the others: ${bad.map((m) => describeValue(m.map((f) => f.toString()), 60)).join(", ")}. ${problem}`,
          );
        }
        // close(): the subscription goes (the grader's XPUB sees it withdrawn), and onTick is done.
        await learnerCall(t, "close()", sub.close(), CALL_MS);
        await waitUntil(t, () => gp.live().length === 0, 2000, () => `close() resolved, but 2 s later the grader's publisher still had the subscriber's subscriptions ${describeValue(gp.live())}: close the socket.`, [host]);
        const calls = rec.calls.length;
        await gp.sendTicks(ticksFor(t, ticker, traffic, 3));
        await sleep(100);
        await settle(host);
        if (rec.calls.length > calls) t.fail(`After close() resolved, onTick was called ${rec.calls.length - calls} more time(s).`);
      },
    },
  ],
});
