import { amqpCode, brokerText, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { AmqpFrame, QueueDeclareSeen } from "../../../src/kit/index.ts";
import type { PriceFeedSubmission } from "../../../src/contracts/price-feed.ts";
import {
  ARRIVE_MS,
  CALL_MS,
  REFERENCE_EXCHANGE,
  SYMBOLS,
  Ticker,
  callSubscribe,
  cap,
  deliveredIds,
  describeIds,
  drain,
  graderSide,
  judgeReceived,
  learnerChannel,
  newSub,
  prepareSub,
  probeQueue,
  publish,
  queueOf,
  resourceName,
  settle,
  sleep,
  subscribeOn,
  throwaway,
  waitUntil,
  type Item,
  type Sub,
  type T,
} from "./grader-util.ts";

/**
 * How long the grader holds a broker confirmation (bind-ok, consume-ok, cancel-ok) and checks
 * that the learner's call has not resolved meanwhile. The calls need a millisecond or two once
 * the confirmation lands; a call that resolves without it is fire-and-forget, and a hold of any
 * length shows it.
 */
const HOLD_MS = 700;
/**
 * How long nothing may cross to a stalled subscriber before the grader takes what it holds as
 * final. A subscriber that takes ticks while onTick is stalled takes them one ack round trip
 * apart; on a loaded box that is well under this.
 */
const STALL_QUIET_MS = 250;
/** The contract's largest prefetch: ticks a stalled subscriber may hold in its own process. */
const MAX_PREFETCH = 10;

const isBindOk = (f: AmqpFrame) => f.type === 1 && f.classId === 50 && f.methodId === 21;
const isConsumeOk = (f: AmqpFrame) => f.type === 1 && f.classId === 60 && f.methodId === 21;
/** Whatever confirms that a subscription is over: cancel-ok, channel or connection close-ok, queue delete-ok. */
const isStopConfirm = (f: AmqpFrame) =>
  f.type === 1 && ((f.classId === 60 && f.methodId === 31) || (f.classId === 20 && f.methodId === 41) || (f.classId === 10 && f.methodId === 51) || (f.classId === 50 && f.methodId === 41));

/** A few distinct symbols, always with two that share a prefix (A and AA, AA and AAPL, MS and MSFT). */
function pickSymbols(t: T, n: number): string[] {
  const pair = t.rng.pick([
    ["A", "AA"],
    ["AA", "AAPL"],
    ["AAPL", "AAL"],
    ["MS", "MSFT"],
    ["T", "TSLA"],
  ]);
  const one = t.rng.pick(pair);
  const rest = t.rng.shuffle(SYMBOLS.filter((s) => !pair.includes(s)));
  return t.rng.shuffle([one, ...rest.slice(0, n - 1)]);
}

/** Symbols of 1 to 6 upper-case letters and digits made up for one run, none of SYMBOLS. */
function freshSymbols(t: T, n: number): string[] {
  const chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const out: string[] = [];
  while (out.length < n) {
    const s = t.rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ".split("")) + Array.from({ length: t.rng.int(0, 5) }, () => t.rng.pick(chars.split(""))).join("");
    if (!SYMBOLS.includes(s) && !out.includes(s)) out.push(s);
  }
  return out;
}

/** The symbols a subscription asks for, as ticks can be made for them. */
function trafficFor(symbols: string[]): string[] {
  return symbols.includes("*") ? SYMBOLS : symbols;
}

/** What is wrong with a subscriber's queue declaration, or null. */
function judgeDeclare(s: Sub, d: QueueDeclareSeen): string | null {
  const m = d.method;
  const what = `${cap(s.label)} declared its queue ${describeValue(d.queue)} with durable ${m.durable}, exclusive ${m.exclusive}, auto-delete ${m.autoDelete} and arguments ${describeValue(m.arguments)}`;
  if (m.durable) return `${what}. A durable queue per subscriber outlives the subscriber it was made for and keeps collecting ticks for nobody; a live feed's queue is not durable.`;
  if (!m.exclusive) return `${what}. It must be exclusive: only this subscriber's connection may use it, and the broker deletes it when that connection goes (another connection could consume it, and share its ticks).`;
  if (!m.autoDelete) return `${what}. It must be auto-delete: gone as soon as its consumer is cancelled, not left collecting ticks until the connection closes.`;
  const args = { ...m.arguments };
  const max = args["x-max-length"];
  delete args["x-max-length"];
  const overflow = args["x-overflow"];
  delete args["x-overflow"];
  if (max === undefined) return `${what}. Without x-max-length the backlog of a subscriber that falls behind has no bound: set it to options.maxBacklog (${s.maxBacklog}).`;
  if (max !== s.maxBacklog) return `${what}. x-max-length must be options.maxBacklog, ${s.maxBacklog}, not ${describeValue(max)}.`;
  if (overflow !== undefined && overflow !== "drop-head") {
    return `${what}. x-overflow ${describeValue(overflow)} refuses new ticks once the queue is full, so a subscriber that falls behind keeps the OLDEST prices; drop-head (the default) drops the oldest to make room for the newest.`;
  }
  if (Object.keys(args).length) return `${what}. Only x-max-length (and x-overflow drop-head) belong there; remove ${describeValue(Object.keys(args))}.`;
  return null;
}

/** Waits until the subscriber has handed `last` to onTick (everything routed before it has arrived by then: a queue is FIFO). */
async function waitFor(t: T, s: Sub, last: Item, want: Item[], ms = ARRIVE_MS, extra: ReadonlySet<string> = new Set()): Promise<void> {
  await waitUntil(
    t,
    () => s.rec.ids().includes(last.id),
    ms,
    () => `${cap(s.label)} (symbols ${describeValue(s.symbols)}): within ${ms / 1000} s, ${redelivery(s) ?? stuck(s) ?? judgeReceived(s, want, extra) ?? "onTick did not get every tick"}`,
    [s.host],
  );
}

/** A tick the subscriber put back (requeue) or the broker delivered again, in words; null if none. */
function redelivery(s: Sub): string | null {
  const requeued = s.wire.deliveries.find((d) => d.settled && d.settled.requeue && d.settled.how !== "closed");
  if (requeued) {
    const n = s.wire.deliveries.filter((d) => d.messageId === requeued.messageId).length;
    return `the subscriber settled ${describeValue(requeued.messageId)} with basic.${requeued.settled!.how} and requeue, and the broker delivered it ${n} times: a stale tick comes back (and blocks the ones behind it). A tick whose onTick failed, or a body that is not JSON, is acked or rejected without requeue.`;
  }
  const again = s.wire.deliveries.find((d) => d.redelivered);
  if (again) return `the broker redelivered ${describeValue(again.messageId)} to the subscriber: a tick is delivered once.`;
  return null;
}

/** The feed stopped with deliveries left unacked while onTick was idle, in words; null if not. */
function stuck(s: Sub): string | null {
  const open = s.wire.outstanding();
  if (open.length === 0 || s.rec.calls.some((c) => c.state === "running")) return null;
  const failed = s.rec.calls.filter((c) => c.state === "failed").map((c) => c.id);
  return (
    `the subscriber stopped getting ticks with ${open.length} deliveries unacked on its connection (${describeIds(open.map((d) => d.messageId ?? "?"), 4)}) and no onTick call running` +
    (failed.length ? `; onTick had rejected ${describeIds(failed, 4)}` : "") +
    `. Every delivery must be acked (or rejected without requeue) once onTick has settled, however it settled: the prefetch counts unacked ones.`
  );
}

/** Calls stop() and waits for it, failing with what was observed. */
async function stopSub(t: T, s: Sub): Promise<void> {
  try {
    await t.within(`stop() of ${s.label}`, CALL_MS, s.subscription!.stop());
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`stop() of ${s.label} threw: ${brokerText(e)}`);
  }
}

async function learnerCall<R>(t: T, what: string, p: Promise<R>): Promise<R> {
  try {
    return await t.within(what, CALL_MS, p);
  } catch (e) {
    if ((e as Error)?.name === "CheckFailure") throw e;
    t.fail(`${what} threw: ${brokerText(e)}`);
  }
}

export default defineGrader<PriceFeedSubmission>({
  exports: { declareFeed: "function", publishTick: "function", subscribe: "function" },
  // Checks share nothing (a vhost per grading, names per check, hosts per check) and mostly
  // wait on the broker: three at a time.
  concurrency: 3,
  checks: [
    {
      name: "declareFeed makes a durable topic exchange",
      hint: "assertExchange(exchange, \"topic\", { durable: true }): a topic exchange routes on the words of the routing key; a fanout exchange ignores it.",
      timeoutMs: 10000,
      async run(t) {
        const g = await graderSide(t, { declare: false });
        const l = await learnerChannel(t, "first");
        await learnerCall(t, "declareFeed()", l.host.call("declareFeed", l.ch, g.exchange));
        const passive = await throwaway(g);
        try {
          await passive.checkExchange(g.exchange);
          await passive.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) === 404) t.fail(`After declareFeed(ch, ${describeValue(g.exchange)}) resolved, the broker has no exchange of that name.`);
          throw e;
        }
        const probe = await throwaway(g);
        try {
          await probe.assertExchange(g.exchange, "topic", REFERENCE_EXCHANGE);
          await probe.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) !== 406) throw e;
          const said = brokerText(e);
          const arg = /inequivalent arg '([^']+)'/.exec(said)?.[1];
          if (arg === "type") t.fail(`The exchange is not a topic exchange (the broker says: ${said}). Only a topic exchange routes price.AAPL to the subscribers of AAPL and nobody else; a fanout exchange sends every tick to every subscriber.`);
          if (arg === "durable") t.fail(`The exchange is not durable (the broker says: ${said}). The feed's topology should survive a broker restart, even though its ticks do not.`);
          t.fail(`The exchange is not declared as asked (the broker says: ${said}). Declare a durable topic exchange, not auto-delete, not internal.`);
        }
        const sent = l.topo.exchangeDeclares.filter((d) => d.method.exchange === g.exchange && !d.method.passive);
        const extra = sent.find((d) => Object.keys(d.method.arguments).length > 0);
        if (extra) t.fail(`declareFeed() declared the exchange with arguments ${describeValue(extra.method.arguments)}; it takes none.`);
        await learnerCall(t, "declareFeed() (second call)", l.host.call("declareFeed", l.ch, g.exchange));
      },
    },
    {
      name: "publishTick sends each tick as transient JSON, routed by price.<symbol>",
      hint: "ch.publish(exchange, `price.${tick.symbol}`, Buffer.from(JSON.stringify(tick)), { persistent: false }): a tick is stale in a second, so nothing is written to disk for it.",
      timeoutMs: 10000,
      async run(t) {
        const g = await graderSide(t);
        const tap = resourceName(t, "queue", "tap");
        // The grader's own queue, exclusive to its connection, bound to everything on the exchange.
        await g.pub.assertQueue(tap, { exclusive: true, durable: false });
        await g.pub.bindQueue(tap, g.exchange, "#");
        const l = await learnerChannel(t, "first");
        const ticker = new Ticker(t.rng);
        const symbols = t.rng.shuffle(["A", "AAPL", "BRK2", ...t.rng.shuffle(["AA", "MSFT", "Z9", "T", "IBM"]).slice(0, 3)]);
        const ticks = symbols.map((s, i) => ticker.tick(s, { book: i % 3 === 0 }));
        // Calls cross to the host in order and run there in order.
        await Promise.all(ticks.map((tick) => learnerCall(t, `publishTick(…, ${describeValue(tick.symbol)})`, l.host.call("publishTick", l.ch, g.exchange, tick))));
        let held = 0;
        await waitUntil(
          t,
          async () => {
            const p = await probeQueue(g, tap);
            held = typeof p === "object" ? p.messageCount : 0;
            return held >= ticks.length;
          },
          3000,
          () => `After ${ticks.length} calls to publishTick(), a queue the grader bound to the exchange with "#" holds ${held} messages. Publish to the exchange you are given (not the default exchange), one message per tick.`,
          [l.host],
        );
        const got = await drain(g, tap);
        if (got.length !== ticks.length) t.fail(`The grader called publishTick() ${ticks.length} times and its queue received ${got.length} messages: one message per tick.`);
        ticks.forEach((tick, i) => {
          const m = got[i]!;
          const want = JSON.stringify(tick);
          if (m.fields.routingKey !== `price.${tick.symbol}`) {
            t.fail(`The tick for ${describeValue(tick.symbol)} was published with routing key ${describeValue(m.fields.routingKey)}; expected ${describeValue(`price.${tick.symbol}`)}, which subscribers bind to.`);
          }
          if (!m.content.equals(Buffer.from(want, "utf8"))) {
            t.fail(`The tick ${describeValue(`${tick.symbol}#${tick.seq}`)} arrived as ${describeValue(m.content.toString("utf8"), 100)}, expected exactly JSON.stringify(tick): ${describeValue(want, 100)}.`);
          }
          if (m.properties.deliveryMode === 2) {
            t.fail(`The tick for ${describeValue(tick.symbol)} was published persistent (delivery mode 2): the broker writes it to disk for queues that could keep it, for a price that is stale a second later. Ticks are transient (persistent: false).`);
          }
          if (m.properties.deliveryMode !== undefined && m.properties.deliveryMode !== 1) {
            t.fail(`The tick for ${describeValue(tick.symbol)} carries delivery mode ${describeValue(m.properties.deliveryMode)}; a transient message has 1 (or none).`);
          }
        });
      },
    },
    {
      name: "a subscriber gets exactly the ticks of its symbols, in order",
      hint: "Bind the queue once per symbol with routing key price.<symbol>. In a topic exchange a word matches a whole word: price.AA never matches price.AAPL.",
      timeoutMs: 10000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = pickSymbols(t, t.rng.int(2, 3));
        const s = await newSub(t, g, "the subscriber", "first", symbols, 50);
        const ticker = new Ticker(t.rng);
        const c = t.rng.pick(symbols);
        const noise = [`price.${c}.depth`, `trade.${c}`, "price", c, `${c}.price`].map((k) => ticker.noiseItem(k));
        const items = ticker.items(SYMBOLS, t.rng.int(24, 36));
        const mixed = [...items];
        for (const n of noise) mixed.splice(t.rng.int(0, mixed.length), 0, n);
        const last = ticker.item(t.rng.pick(symbols));
        await publish(g, [...mixed, last]);
        const want = [...items.filter((i) => symbols.includes(i.tick!.symbol)), last];
        await waitFor(t, s, last, want);
        await settle([s.host]);
        const problem = judgeReceived(s, want);
        if (problem) t.fail(`The subscriber asked for ${describeValue(symbols)} and the grader published ticks of ${SYMBOLS.length} symbols plus other messages on the exchange: ${problem}`);
      },
    },
    {
      name: "a subscriber to every symbol (\"*\") gets every tick and nothing else on the exchange",
      hint: "\"Every symbol\" is one word after price.: price.*. The # wildcard matches any number of words, so price.# and # also take price.AAPL.depth, price and trade.AAPL.",
      timeoutMs: 10000,
      async run(t) {
        const g = await graderSide(t);
        const s = await newSub(t, g, "the subscriber", "first", ["*"], 50);
        const ticker = new Ticker(t.rng);
        const c = t.rng.pick(SYMBOLS);
        // Every run: more words after price. (price.# takes them), none (price.# takes it too), another first word (# takes it).
        const noise = [`price.${c}.depth`, `price.${c}.${t.rng.pick(SYMBOLS)}`, "price", `trade.${c}`, "status"].map((k) => ticker.noiseItem(k));
        // Every symbol is every symbol: also two made up for this run, which no list of known ones has.
        const universe = [...SYMBOLS, ...freshSymbols(t, 2)];
        const items = ticker.items(universe, t.rng.int(24, 32));
        const mixed = [...items];
        for (const n of noise) mixed.splice(t.rng.int(0, mixed.length), 0, n);
        const last = ticker.item(t.rng.pick(universe));
        await publish(g, [...mixed, last]);
        const want = [...items, last];
        await waitFor(t, s, last, want);
        await settle([s.host]);
        const problem = judgeReceived(s, want);
        if (problem) t.fail(`The subscriber asked for every symbol (["*"]), and the grader published ticks of ${describeValue(universe)} plus messages with routing keys ${describeValue(noise.map((n) => n.key))}: ${problem}`);
      },
    },
    {
      name: "subscribe() resolves once its queue is bound and consuming, and misses nothing published after",
      hint: "Await every step: assertQueue, each bindQueue, prefetch, consume. A subscribe() that returns before the broker has confirmed the binding and the consumer loses the ticks published right after it.",
      timeoutMs: 12000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 2)]);
        const s = await prepareSub(t, "the subscriber", "first", symbols, 50);
        let resolved = false;
        const started = callSubscribe(g, s).then((v) => {
          resolved = true;
          return v;
        });
        started.catch(() => (resolved = true));
        // The broker's bind-ok is held first, then (once it is let go) its consume-ok.
        for (const [what, match] of [
          ["queue.bind-ok (the binding is in place)", isBindOk],
          ["basic.consume-ok (the consumer is registered)", isConsumeOk],
        ] as const) {
          // A subscriber may consume before it binds: a confirmation that has already crossed is not held.
          if (s.proxy.seen.some((x) => x.direction === "toClient" && match(x.frame as AmqpFrame))) continue;
          s.proxy.hold("toClient", match);
          await waitUntil(t, () => s.proxy.heldCount > 0 || resolved, 3000, () => `subscribe() was called; within 3 s the broker sent no ${what.split(" ")[0]} to the subscriber's connection. subscribe() must bind its queue and consume it on the channel it is given.`, [s.host]);
          if (resolved && s.proxy.heldCount === 0) {
            await started.catch((e) => t.fail(`subscribe() threw: ${brokerText(e)}`));
            t.fail(`subscribe() resolved before the broker had sent ${what}: a tick published right after it resolved could be lost.`);
          }
          await sleep(HOLD_MS);
          await settle([s.host]);
          if (resolved) t.fail(`subscribe() resolved while the grader held the broker's ${what} for ${HOLD_MS} ms: it must resolve only once the broker has confirmed it.`);
          s.proxy.release();
        }
        await subscribeOn(t, g, s, started);
        const ticker = new Ticker(t.rng);
        const items = ticker.items(trafficFor(symbols), t.rng.int(5, 12));
        await publish(g, items);
        await waitFor(t, s, items[items.length - 1]!, items);
        const problem = judgeReceived(s, items);
        if (problem) t.fail(`The grader published ${items.length} ticks the moment subscribe() resolved: ${problem}`);
      },
    },
    {
      name: "each subscriber has its own exclusive, auto-delete queue, bounded by maxBacklog",
      hint: "assertQueue(\"\", { exclusive: true, autoDelete: true, durable: false, maxLength: options.maxBacklog }): a server-named queue per subscriber, which only its connection can use.",
      timeoutMs: 10000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, t.rng.int(1, 2))]);
        // Bounds above the ticks published at once here: this check is not about dropping them.
        const backlogs = t.rng.shuffle([t.rng.int(10, 20), t.rng.int(21, 50)]);
        // Two subscribers to the same symbols, each in a process of its own.
        const subs = await Promise.all(backlogs.map((b, i) => newSub(t, g, `subscriber ${i + 1}`, i === 0 ? "first" : "new", symbols, b)));
        const queues = subs.map((s) => {
          const { queue, declare } = queueOf(t, s);
          const problem = judgeDeclare(s, declare);
          if (problem) t.fail(problem);
          return queue;
        });
        if (queues[0] === queues[1]) {
          t.fail(`Both subscribers consume the same queue, ${describeValue(queues[0])}: they would share its ticks (each gets some) instead of each getting every tick. Each subscriber declares a queue of its own.`);
        }
        for (const [i, s] of subs.entries()) {
          const seen = await probeQueue(g, queues[i]!);
          if (seen === "missing") t.fail(`${cap(s.label)} consumes queue ${describeValue(queues[i])}, but the broker has no such queue while the subscriber is running.`);
          if (typeof seen === "object") {
            t.fail(`The grader's own connection could open ${s.label}'s queue ${describeValue(queues[i])} (a passive declare succeeded; ${seen.consumerCount} consumer(s)): it is not exclusive, so any connection can consume it and take its ticks.`);
          }
        }
        const ticker = new Ticker(t.rng);
        const items = ticker.items(trafficFor(symbols), t.rng.int(6, 10));
        await publish(g, items);
        for (const s of subs) {
          await waitFor(t, s, items[items.length - 1]!, items);
          const problem = judgeReceived(s, items);
          if (problem) t.fail(`Two subscribers to ${describeValue(symbols)}; ${s.label}: ${problem}`);
        }
      },
    },
    {
      name: "a stalled subscriber's backlog stays at maxBacklog and keeps the newest ticks",
      hint: "x-max-length bounds what waits in the broker, and the default overflow (drop-head) drops the oldest; a prefetch (1 to 10) with manual acks keeps the rest of the backlog in the broker, where the bound applies.",
      timeoutMs: 15000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 1), pickSymbols(t, 2)]);
        // Two subscribers with different bounds: a bound written into the code matches one at most.
        const backlogs = t.rng.shuffle([t.rng.int(2, 9), t.rng.int(11, 30)]);
        const subs = await Promise.all(backlogs.map((b, i) => newSub(t, g, `subscriber ${i + 1} (maxBacklog ${b})`, i === 0 ? "first" : "new", symbols, b)));
        const hosts = subs.map((s) => s.host);
        // The feed flows for a few ticks, then each onTick blocks: the subscriber is stalled.
        const k = t.rng.int(1, 4);
        for (const s of subs) s.rec.stallFrom = k;
        const ticker = new Ticker(t.rng);
        const traffic = trafficFor(symbols);
        const first = ticker.items(traffic, k);
        // One at a time, each awaited: published at once, k ticks can overflow a small bound
        // (a prefetch of 1 and maxBacklog 2 hold three) and a correct subscriber would lose one.
        for (const [i, item] of first.entries()) {
          await publish(g, [item]);
          await waitUntil(t, () => subs.every((s) => s.rec.calls.length > i), ARRIVE_MS, () => `${i + 1} tick(s) were published, one at a time; within ${ARRIVE_MS / 1000} s onTick was called ${subs.map((s) => `${s.rec.calls.length} time(s) in ${s.label}`).join(" and ")}.`, hosts);
        }
        const flood = ticker.items(traffic, Math.max(...backlogs) * 2 + t.rng.int(12, 40));
        const published = [...first, ...flood];
        // Confirmed: every tick has reached each subscriber's queue (or been dropped by it).
        const refused = await publish(g, flood);
        // Still stalled, until nothing more crosses to either subscriber for a while: one that
        // acks before onTick has settled (or has no prefetch, or auto-acks) keeps taking ticks
        // from its queue meanwhile, however slowly its process runs; one that waits has its
        // prefetch full and takes nothing.
        await settle(hosts);
        let seen = -1;
        let quietSince = Date.now();
        await waitUntil(
          t,
          () => {
            const n = subs.reduce((sum, s) => sum + s.wire.deliveries.length, 0);
            if (n !== seen) {
              seen = n;
              quietSince = Date.now();
            }
            return Date.now() - quietSince > STALL_QUIET_MS;
          },
          ARRIVE_MS + 2000,
          () => `While onTick was stalled, ticks kept arriving at the subscribers for ${(ARRIVE_MS + 2000) / 1000} s (${seen} deliveries).`,
          hosts,
        );
        const before = subs.map((s) => deliveredIds(s));
        const newest = published[published.length - 1]!.id;
        const releasedAt = Date.now();
        for (const s of subs) s.rec.release();
        // Wait until the newest tick arrived (drop-head keeps it), or until each subscriber has
        // gone quiet with nothing left unacked (a queue that kept the oldest never delivers it).
        for (const s of subs) {
          let lastCount = -1;
          let quietSince = Date.now();
          await waitUntil(
            t,
            () => {
              const n = s.wire.deliveries.length;
              if (n !== lastCount) {
                lastCount = n;
                quietSince = Date.now();
              }
              if (deliveredIds(s).includes(newest)) return true;
              return s.wire.outstanding().length === 0 && Date.now() - quietSince > 300 && Date.now() - releasedAt > 300;
            },
            ARRIVE_MS + 2000,
            () => `${cap(s.label)}: after onTick was let go, the ticks waiting for it kept arriving for ${(ARRIVE_MS + 2000) / 1000} s (${s.wire.deliveries.length} deliveries so far, ${published.length} ticks published).`,
            hosts,
          );
        }
        await settle(hosts);
        await sleep(50);
        const ids = published.map((i) => i.id);
        subs.forEach((s, i) => {
          const b = s.maxBacklog;
          const pre = before[i]!;
          const all = deliveredIds(s);
          const ctx = `${cap(s.label)} stalled in onTick on its tick ${k} while ${flood.length} more ticks were published;`;
          const q = queueOf(t, s);
          const args = `its queue was declared with ${describeValue(q.declare.method.arguments)}`;
          // The first k - 1 were handled before the stall; the k-th is the one onTick is stuck on.
          const handled = k - 1;
          if (pre.length - handled > MAX_PREFETCH) {
            t.fail(`${ctx} ${pre.length - handled} of them were pushed to its process meanwhile (the grader counted the deliveries on its connection). Its prefetch (1 to 10, set before consuming, with manual acks, and ack only after onTick) must keep the backlog in the broker, where maxBacklog bounds it; in the process it has no bound.`);
          }
          const head = all.length - b;
          if (head - handled > MAX_PREFETCH) {
            t.fail(`${ctx} once it was let go it received ${all.length - handled} (${pre.length - handled} were already in its process): ${all.length - pre.length} had waited in the broker, more than maxBacklog ${b}. ${cap(args)}; x-max-length must be options.maxBacklog.`);
          }
          const expectTail = ids.slice(-b);
          const tail = all.slice(Math.max(0, head));
          if (tail.join("\n") !== expectTail.join("\n") || all.slice(0, Math.max(0, head)).join("\n") !== ids.slice(0, Math.max(0, head)).join("\n")) {
            const fromQueue = all.slice(pre.length);
            const oldest = ids.slice(pre.length, pre.length + fromQueue.length);
            const keptOldest = fromQueue.length > 0 && fromQueue.join("\n") === oldest.join("\n") && fromQueue[fromQueue.length - 1] !== ids[ids.length - 1];
            if (keptOldest || refused.length) {
              const nacks = refused.length ? ` (the broker also refused ${refused.length} of the grader's publishes: nacks from a full queue)` : "";
              t.fail(`${ctx} the ${fromQueue.length} ticks that had waited in the broker were the OLDEST ones (${describeIds(fromQueue, 4)}), and the newest (${describeValue(ids[ids.length - 1])}) never came${nacks}: ${args}. A full queue must drop its oldest tick (x-overflow drop-head, the default), not refuse new ones (reject-publish).`);
            }
            if (all.length < b) {
              t.fail(`${ctx} once it was let go it had received ${all.length} in all, fewer than maxBacklog ${b}: ${args}. x-max-length must be options.maxBacklog, and every tick waiting in the queue must reach onTick.`);
            }
            t.fail(`${ctx} it received ${describeIds(all, 8)}. Expected the first ${Math.max(0, head)} published (handled, or already in its process) and then the newest ${b}: ${describeIds(expectTail, 4)}. ${cap(args)}.`);
          }
          const got = s.rec.ids();
          const missing = all.filter((id) => !got.includes(id));
          if (missing.length) t.fail(`${ctx} the broker delivered ${describeIds(missing, 4)} to it after it was let go, and onTick never got them.`);
        });
      },
    },
    {
      name: "a late subscriber gets no history",
      hint: "The queue is the subscriber's own and made fresh at subscribe(): with a server-named exclusive auto-delete queue, no earlier subscriber's queue (and its backlog) can be picked up again.",
      timeoutMs: 12000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 1), pickSymbols(t, 2)]);
        const traffic = trafficFor(symbols);
        const ticker = new Ticker(t.rng);
        const a = await newSub(t, g, "the first subscriber", "first", symbols, 50);
        const early = ticker.items(traffic, t.rng.int(3, 8));
        await publish(g, early);
        await waitFor(t, a, early[early.length - 1]!, early);
        await stopSub(t, a);
        // Published while nobody subscribes: these go nowhere.
        const meanwhile = ticker.items(traffic, t.rng.int(3, 8));
        await publish(g, meanwhile);
        // Two late subscribers: one in the first subscriber's process, one in a process of its own.
        const late = await Promise.all([newSub(t, g, "the late subscriber in the same process", a.host, symbols, 50), newSub(t, g, "the late subscriber in another process", "new", symbols, 50)]);
        const live = ticker.items(traffic, t.rng.int(3, 8));
        await publish(g, live);
        const old = new Set([...early, ...meanwhile].map((i) => i.id));
        for (const b of late) {
          await waitUntil(t, () => b.rec.ids().includes(live[live.length - 1]!.id) || deliveredIds(b).some((id) => old.has(id)), ARRIVE_MS, () => `${cap(b.label)}: ${judgeReceived(b, live) ?? "onTick did not get the ticks published after subscribe()"}`, [b.host]);
        }
        await settle(late.map((b) => b.host));
        for (const b of late) {
          const history = deliveredIds(b).filter((id) => old.has(id));
          const ctx = `A subscriber to ${describeValue(symbols)} got ${early.length} ticks and stopped; ${meanwhile.length} more were published with nobody subscribed; then ${b.label} subscribed to the same symbols and`;
          if (history.length) {
            const q = queueOf(t, b).queue;
            t.fail(
              `${ctx} the broker delivered ${history.length} of those earlier ticks to it (${describeIds(history, 4)}) from queue ${describeValue(q)}: ` +
                `it picked up a queue left over from the first subscriber. A live feed has no history: each subscriber's queue is its own, made at subscribe() and gone with it.`,
            );
          }
          const replayed = b.rec.calls.find((c) => old.has(c.id));
          if (replayed) t.fail(`${ctx} onTick got ${describeValue(replayed.id)}, published before it subscribed (no delivery on its connection carried it: your process kept it). A live feed has no history.`);
          const problem = judgeReceived(b, live);
          if (problem) t.fail(`${cap(b.label)}, for the ticks published after it subscribed: ${problem}`);
        }
      },
    },
    {
      name: "a crashed subscriber leaves no queue behind, and the others keep receiving",
      hint: "An exclusive queue belongs to its connection: when the process dies and the connection drops, the broker deletes it. A named, non-exclusive queue outlives the subscriber and fills up for nobody.",
      timeoutMs: 12000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 2)]);
        const traffic = trafficFor(symbols);
        const ticker = new Ticker(t.rng);
        const doomed = await newSub(t, g, "the subscriber that crashes", "first", symbols, t.rng.int(6, 30));
        const other = await newSub(t, g, "the other subscriber", "new", symbols, 50);
        // The doomed one is in the middle of a tick when it dies, with more waiting for it.
        doomed.rec.stallFrom = t.rng.int(1, 3);
        const items = ticker.items(traffic, t.rng.int(8, 14));
        await publish(g, items);
        await waitFor(t, other, items[items.length - 1]!, items);
        await waitUntil(t, () => doomed.rec.calls.length >= doomed.rec.stallFrom!, ARRIVE_MS, () => `The subscriber's onTick was called ${doomed.rec.calls.length} time(s) for ${items.length} ticks.`, [doomed.host]);
        const { queue } = queueOf(t, doomed);
        await doomed.host.kill();
        let seen: Awaited<ReturnType<typeof probeQueue>> = "exclusive";
        await waitUntil(
          t,
          async () => (seen = await probeQueue(g, queue)) === "missing",
          3000,
          () =>
            `The grader SIGKILLed the process of a subscriber; 3 s later its queue ${describeValue(queue)} still exists` +
            (typeof seen === "object" ? ` (${seen.messageCount} ticks waiting in it, ${seen.consumerCount} consumers)` : "") +
            `. A subscriber's queue must go with it: exclusive (and auto-delete), so the broker deletes it when the connection drops.`,
        );
        const more = ticker.items(traffic, t.rng.int(4, 8));
        await publish(g, more);
        await waitFor(t, other, more[more.length - 1]!, [...items, ...more]);
        const problem = judgeReceived(other, [...items, ...more]);
        if (problem) t.fail(`Two subscribers to ${describeValue(symbols)}; one crashed; the other: ${problem}`);
        // A restarted subscriber starts from now, not from what was waiting for the dead one.
        const again = await newSub(t, g, "the restarted subscriber", "new", symbols, doomed.maxBacklog);
        const live = ticker.items(traffic, t.rng.int(3, 5));
        await publish(g, live);
        await waitFor(t, again, live[live.length - 1]!, live);
        const p2 = judgeReceived(again, live);
        if (p2) t.fail(`After the crash, a restarted subscriber to the same symbols: ${p2}`);
      },
    },
    {
      name: "stop() cancels the consumer, removes the queue, and no tick reaches onTick after it",
      hint: "stop(): await ch.cancel(consumerTag), and drop the deliveries still waiting in your process (a flag checked before each onTick call). With an auto-delete queue, the broker deletes the queue once its last consumer is cancelled.",
      timeoutMs: 12000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 2)]);
        const traffic = trafficFor(symbols);
        const ticker = new Ticker(t.rng);
        const s = await newSub(t, g, "the subscriber", "first", symbols, t.rng.int(10, 50));
        const items = ticker.items(traffic, t.rng.int(3, 8));
        await publish(g, items);
        await waitFor(t, s, items[items.length - 1]!, items);
        const { queue } = queueOf(t, s);
        // Then onTick blocks on a tick, with more ticks behind it: whatever the prefetch let into the
        // process is there when stop() is called.
        const stalledAt = s.rec.calls.length + 1;
        s.rec.stallFrom = stalledAt;
        const behind = ticker.items(traffic, t.rng.int(12, 20));
        await publish(g, behind);
        await waitUntil(t, () => s.rec.calls.length >= stalledAt, ARRIVE_MS, () => `${cap(s.label)}: within ${ARRIVE_MS / 1000} s, ${judgeReceived(s, [...items, ...behind]) ?? "onTick did not get the next tick"}`, [s.host]);
        await sleep(150);
        await settle([s.host]);
        s.proxy.hold("toClient", isStopConfirm);
        let resolved = false;
        let callsAtStop = -1;
        const stopping = s.subscription!.stop().then(() => {
          resolved = true;
          callsAtStop = s.rec.calls.length;
        });
        stopping.catch(() => (resolved = true));
        await waitUntil(t, () => s.proxy.heldCount > 0 || resolved, 3000, () => `stop() was called; within 3 s the subscriber sent nothing the broker confirmed (no basic.cancel, channel close or queue delete).`, [s.host]);
        if (resolved && s.proxy.heldCount === 0) {
          await stopping.catch((e) => t.fail(`stop() threw: ${brokerText(e)}`));
          t.fail(`stop() resolved before the broker had confirmed anything (no basic.cancel-ok, close-ok or delete-ok had reached the subscriber): the consumer may still be registered, and ticks still arrive.`);
        }
        await sleep(HOLD_MS);
        await settle([s.host]);
        if (resolved) t.fail(`stop() resolved while the grader held the broker's confirmation (cancel-ok) for ${HOLD_MS} ms: it must resolve only once the broker has cancelled the consumer.`);
        s.proxy.release();
        // onTick stays blocked until stop() has resolved (or for a second: stop() may wait for the call in progress).
        for (const until = Date.now() + 1000; !resolved && Date.now() < until; ) await sleep(10);
        await settle([s.host]);
        s.rec.release();
        await t.within("stop()", CALL_MS, stopping).catch((e) => {
          if ((e as Error)?.name === "CheckFailure") throw e;
          t.fail(`stop() threw: ${brokerText(e)}`);
        });
        const calls = callsAtStop;
        await sleep(100);
        await settle([s.host]);
        if (s.rec.calls.length > calls) {
          const held = deliveredIds(s).filter((id) => behind.some((b) => b.id === id)).length;
          t.fail(
            `onTick was blocked on ${describeValue(s.rec.calls[stalledAt - 1]!.id)} when stop() was called, with ${held} of the ${behind.length} ticks published after it already delivered to the subscriber's process; ` +
              `once stop() had resolved and onTick was let go, onTick was called ${s.rec.calls.length - calls} more time(s) (${describeValue(s.rec.calls[calls]!.id)} first). ` +
              `Once stop() has resolved, onTick is not called again: the deliveries still waiting in your process are dropped.`,
          );
        }
        let seen: Awaited<ReturnType<typeof probeQueue>> = "exclusive";
        await waitUntil(
          t,
          async () => (seen = await probeQueue(g, queue)) === "missing",
          1500,
          () =>
            `After stop() resolved, the subscriber's queue ${describeValue(queue)} still exists` +
            (seen === "exclusive" ? " (still held by the subscriber's connection)" : typeof seen === "object" ? ` (${seen.messageCount} ticks in it)` : "") +
            `: it keeps collecting ticks for nobody until the connection closes. Declare it auto-delete, so cancelling its consumer deletes it.`,
        );
        const after = ticker.items(traffic, t.rng.int(3, 6));
        await publish(g, after);
        await sleep(100);
        await settle([s.host]);
        if (s.rec.calls.length > calls) {
          t.fail(`After stop() resolved, the grader published ${after.length} ticks and onTick was called ${s.rec.calls.length - calls} more time(s) (${describeValue(s.rec.calls[calls]!.id)} first).`);
        }
      },
    },
    {
      name: "onTick gets one tick at a time, and a tick whose onTick fails is dropped, not retried",
      hint: "Chain the handling (or use prefetch 1 and ack after onTick) so calls never overlap; catch a rejected onTick and ack (or reject without requeue): a price redelivered later is stale. A body that is not JSON never reaches onTick.",
      timeoutMs: 12000,
      async run(t) {
        const g = await graderSide(t);
        const symbols = t.rng.pick([["*"], pickSymbols(t, 2)]);
        const traffic = trafficFor(symbols);
        const ticker = new Ticker(t.rng);
        const s = await newSub(t, g, "the subscriber", "first", symbols, 50);
        const items = ticker.items(traffic, t.rng.int(14, 22));
        // Every run: three ticks whose onTick rejects, and six bodies that are not ticks.
        const failing = t.rng.shuffle(items.slice(0, -1)).slice(0, 3);
        s.rec.failIds = new Set(failing.map((i) => i.id));
        s.rec.delayMs = () => t.rng.int(0, 3);
        const sym = () => t.rng.pick(traffic);
        const bad = [
          ticker.badItem(sym(), t.rng.pick(["AAPL 189.20", "undefined", "<tick/>", "NaN"])),
          ticker.badItem(sym(), t.rng.pick(['{"symbol":"AA","seq":', "[1, 2", "{symbol: AA}"])),
          ticker.badItem(sym(), ""),
          // JSON, but not an object: null, a number or a string, an array.
          ticker.badItem(sym(), "null"),
          ticker.badItem(sym(), t.rng.pick(["42", '"AAPL"', "true"])),
          ticker.badItem(sym(), '[{"symbol":"AA","seq":1}]'),
        ];
        const mixed = [...items.slice(0, -1)];
        for (const b of bad) mixed.splice(t.rng.int(0, mixed.length), 0, b);
        mixed.push(items[items.length - 1]!);
        await publish(g, mixed);
        const last = items[items.length - 1]!;
        const badIds = new Set(bad.map((b) => b.id));
        await waitFor(t, s, last, items, ARRIVE_MS, badIds);
        await waitUntil(t, () => s.wire.outstanding().length === 0, 2000, () => `After onTick had handled every tick, ${s.wire.outstanding().length} deliveries were still unacked on the subscriber's connection: ack each tick once onTick has settled.`, [s.host]);
        await settle([s.host]);
        const overlap = s.rec.calls.find((c) => c.overlapped);
        if (overlap) t.fail(`onTick was called for ${describeValue(overlap.id)} while its call for an earlier tick was still running: calls must come one at a time, in order (a later price must never be overtaken by an earlier one).`);
        const again = redelivery(s);
        if (again) t.fail(`onTick rejected ${describeIds(failing.map((f) => f.id))}: ${again}`);
        const problem = judgeReceived(s, items, badIds);
        if (problem) t.fail(`onTick rejected ${describeIds(failing.map((f) => f.id))}, and bodies that are not ticks (${bad.map((b) => describeValue(b.body.toString("utf8"))).join(", ")}) were among the ticks: ${problem}`);
      },
    },
  ],
});
