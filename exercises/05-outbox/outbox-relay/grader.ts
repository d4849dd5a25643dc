import { HostGone, defineGrader, describeValue, isConfirm, newTimers, type AmqpFrame } from "../../../src/kit/index.ts";
import type { OutboxRelaySubmission } from "../../../src/contracts/outbox-relay.ts";
import {
  REACT_MS,
  World,
  backoff,
  contractOrder,
  drawSettings,
  insertionOrder,
  errorText,
  isPublishOf,
  judgeDelivered,
  judgeRows,
  makeRows,
  ordinal,
  sleep,
  type Publish,
  type RunningRelay,
  type Seeded,
  type Settings,
  type T,
} from "./grader-util.ts";

/**
 * How long the grader holds the broker's confirms, in real time, while virtual time runs far ahead:
 * longer than any confirm timeout a relay might write, on either clock (a real-time setTimeout of a
 * second or two included).
 */
const HOLD_MS = 3000;
/** The longest the grader holds them, to outlast a real-time timer the relay set meanwhile. */
const MAX_HOLD_MS = 14000;

/** A basic.nack from the broker. */
const isNack = (f: AmqpFrame) => f.type === 1 && f.classId === 60 && f.methodId === 120;

function settingsText(s: Settings): string {
  return `batchSize ${s.batchSize}, pollIntervalMs ${s.pollIntervalMs}, baseDelayMs ${s.baseDelayMs}, maxDelayMs ${s.maxDelayMs}`;
}

/** Every row the check inserted is marked, and the relay sleeps its poll interval: it has done all it will. */
function idle(w: World): boolean {
  const rows = w.outbox.rows();
  return rows.length >= w.seeded.length && rows.every((r) => r.processed_at !== null) && w.clock.open().some((r) => r.ms === w.settings.pollIntervalMs);
}

async function waitIdle(w: World, ctx: string): Promise<void> {
  await w.until(
    () => idle(w),
    () => {
      const pending = w.outbox.pending();
      const open = w.clock.open();
      return (
        `${ctx} Within ${REACT_MS / 1000} s of real time, ${w.seeded.length - pending.length} of ${w.seeded.length} rows were marked processed` +
        (pending.length
          ? ` (the oldest pending: ${describeValue(pending[0]!.id)}, published ${w.tracker.of(pending[0]!.id).length} time(s), retry_count ${pending[0]!.retry_count}${pending[0]!.error ? `, error ${describeValue(pending[0]!.error, 80)}` : ""})`
          : "") +
        (w.upSince !== null ? `; since the broker came back your relay called connect() ${w.attempts.length - w.upSince} time(s)` : "") +
        `, and the relay ${open.length ? `sleeps ${open.map((r) => `${r.ms} ms`).join(", ")} on the clock` : "asked the clock for no sleep"}` +
        `. After a pass with rows, poll again at once; when a poll finds none, await clock.sleep(pollIntervalMs). Every wait goes through the clock: time moves only when the grader says.`
      );
    },
  );
}

/** In a check without faults: the relay may sleep only when no row is pending. */
function noSleepWhilePending(w: World, ctx: string, except: () => boolean = () => false): void {
  w.onSleep = (req) => {
    if (except()) return;
    const pending = w.outbox.pending();
    if (pending.length === 0) return;
    const retried = w.events.find((e) => e.kind === "retry");
    if (retried) {
      w.problem(
        `${ctx} Your relay recorded a failure on row ${describeValue(retried.id)} (error ${describeValue(retried.after.error, 80)}) and asked the clock for a sleep of ${req.ms} ms, though nothing had failed: ` +
          `the broker had neither nacked nor closed anything. Waiting for a confirm has no timeout of its own.`,
      );
      return;
    }
    w.problem(
      `${ctx} Your relay asked the clock for a sleep of ${req.ms} ms while ${pending.length} row(s) were pending (the oldest: ${describeValue(pending[0]!.id)}) and nothing had failed. ` +
        (req.ms === w.settings.pollIntervalMs
          ? "Sleep only when a poll finds no pending row: after a pass with rows, poll again at once."
          : "Waiting for a confirm has no timeout of its own, and no other sleep belongs here."),
    );
  };
}

/** Each row published exactly once on the wire, in the contract's order, on a confirm channel. */
function judgeWire(w: World, rows: Seeded[], ctx: string, expected: Seeded[] = contractOrder(rows)): void {
  const order = expected.map((r) => r.id);
  const pubs = w.tracker.publishes.filter((p) => p.messageId !== undefined && order.includes(p.messageId));
  const plain = w.tracker.publishes.find((p) => p.seq === 0);
  if (plain) t0fail(w, `${ctx} Your relay published row ${describeValue(plain.messageId)} on a channel without publisher confirms (no confirm.select crossed it): the broker never says whether it has the message. Use connection.createConfirmChannel().`);
  const twice = order.find((id) => pubs.filter((p) => p.messageId === id).length > 1);
  if (twice) t0fail(w, `${ctx} Row ${describeValue(twice)} was published ${pubs.filter((p) => p.messageId === twice).length} times, though nothing failed: publish each row once per pass, and start the next poll only when the pass is over.`);
  const wire = pubs.map((p) => p.messageId!);
  const at = wire.findIndex((id, i) => id !== order[i]);
  if (at >= 0) {
    const byId = new Map(rows.map((r) => [r.id, r]));
    const got = byId.get(wire[at]!)!;
    const want = byId.get(order[at]!)!;
    t0fail(
      w,
      `${ctx} Publish ${at + 1} on the wire was row ${describeValue(got.id)} (created_at ${got.created_at}); the oldest row not yet published was ${describeValue(want.id)} (created_at ${want.created_at}). ` +
        (got.created_at === want.created_at
          ? `They share a created_at: then the id decides. Poll ORDER BY created_at, id.`
          : `Poll ORDER BY created_at, id: the ids and the insertion order follow neither.`),
    );
  }
}

function t0fail(w: World, msg: string): never {
  return w.t.fail(msg);
}

/** Drains the grader's queue and checks it, then the rows. */
async function judgeEnd(w: World, ctx: string, mayRepeat: Set<string>, retries: Map<string, number>, order?: Seeded[]): Promise<void> {
  const got = await w.drain();
  const d = judgeDelivered(got, w.seeded, mayRepeat, w.exchange, order);
  if (d) w.t.fail(`${ctx} ${d}`);
  const r = judgeRows(w.outbox, w.seeded, retries);
  if (r) w.t.fail(`${ctx} ${r}`);
}

/** The rows published on the wire and still pending in the database: a failure or crash now may make them repeat. */
function inFlight(w: World): string[] {
  const pending = new Set(w.outbox.pending().map((r) => r.id));
  return [...new Set(w.tracker.publishes.map((p) => p.messageId).filter((id): id is string => id !== undefined && pending.has(id)))];
}

/**
 * Plays failed attempts while the broker is down or refusing, one per loop: waits for the sleep
 * the relay asks for after each failure, checks the row it charged and the delay, and moves the
 * clock to the end of that sleep. `hooks.at(i, req)` runs at failure i (1-based over this call)
 * before time moves: it may kill and restart the process; returning "stay" skips the advance.
 */
async function playFailures(
  w: World,
  count: number,
  retries: Map<string, number>,
  ctx: () => string,
  fromSleep: number,
  hooks: { at?: (i: number) => Promise<"stay" | void>; beforeLast?: () => void | Promise<void> } = {},
): Promise<void> {
  const s = w.settings;
  let seenSleeps = fromSleep;
  for (let i = 1; i <= count; i++) {
    const attemptsBefore = w.attempts.length;
    await w.until(
      () => w.clock.requests.length > seenSleeps || w.attempts.length > attemptsBefore + 1,
      () => {
        const pending = w.outbox.pending()[0];
        return (
          `${ctx()} After failure ${i} of ${count}, your relay asked the clock for no backoff sleep within ${REACT_MS / 1000} s of real time` +
          (pending ? ` (the oldest pending row ${describeValue(pending.id)} has retry_count ${pending.retry_count})` : "") +
          `. Record the failure on the oldest pending row, then await clock.sleep(min(maxDelayMs, baseDelayMs * 2 ** (retry_count - 1)), signal). Never give up on a row.`
        );
      },
    );
    if (w.clock.requests.length === seenSleeps) {
      w.t.fail(`${ctx()} After failure ${i}, your relay tried again ${w.attempts.length - attemptsBefore} times without asking the clock for a sleep: back off with clock.sleep (setTimeout does not move with the grader's clock, and retrying at once hammers a broker that is down).`);
    }
    const req = w.clock.requests[seenSleeps]!;
    seenSleeps += 1;
    // From here until the clock reaches the end of this sleep, the relay may not try again.
    w.notBefore = req.until;
    // The row charged: the oldest pending one, +1, and no other row changed.
    const pending = w.outbox.pending();
    const head = pending[0];
    if (!head) w.t.fail(`${ctx()} After failure ${i} no row is pending, yet nothing was confirmed.`);
    const want = (retries.get(head.id) ?? 0) + 1;
    if (head.retry_count !== want) {
      const other = w.outbox.rows().find((r) => r.id !== head.id && r.retry_count !== (retries.get(r.id) ?? 0));
      t0fail(
        w,
        `${ctx()} After failure ${i}, as the relay asked for its backoff sleep, the oldest pending row ${describeValue(head.id)} had retry_count ${head.retry_count}; expected ${want}. ` +
          (other ? `Row ${describeValue(other.id)} had ${other.retry_count} instead (expected ${retries.get(other.id) ?? 0}): a failure counts against the oldest pending row only, the one the next attempt starts with. ` : "") +
          (head.retry_count < want ? "Record each failed attempt (retry_count + 1, error) in the row, before sleeping: a count kept in memory is gone after a restart." : ""),
      );
    }
    const stray = w.outbox.rows().find((r) => r.id !== head.id && r.retry_count !== (retries.get(r.id) ?? 0));
    if (stray) t0fail(w, `${ctx()} After failure ${i}, row ${describeValue(stray.id)} has retry_count ${stray.retry_count} (expected ${retries.get(stray.id) ?? 0}): a failed attempt counts against the oldest pending row only (${describeValue(head.id)}); stop the pass at the first failure.`);
    if (typeof head.error !== "string" || head.error.length === 0) t0fail(w, `${ctx()} After failure ${i}, row ${describeValue(head.id)} has error ${describeValue(head.error)}: record the failure's message.`);
    const refused = w.attempts.slice(attemptsBefore).at(-1)?.refused;
    if (refused && head.error !== refused) {
      t0fail(w, `${ctx()} Failure ${i} was connect() rejecting with ${describeValue(refused)}, but row ${describeValue(head.id)} has error ${describeValue(head.error)}: record the message of the error of this attempt.`);
    }
    retries.set(head.id, want);
    const delay = backoff(w.settings, want);
    if (req.ms !== delay) {
      t0fail(
        w,
        `${ctx()} After failure ${i}, with row ${describeValue(head.id)} at retry_count ${want}, your relay slept ${req.ms} ms; expected min(${s.maxDelayMs}, ${s.baseDelayMs} × 2^${want - 1}) = ${delay} ms. ` +
          `The backoff doubles with the row's retry_count (persisted, so a restart keeps backing off) and is capped at maxDelayMs.`,
      );
    }
    if (i === count) await hooks.beforeLast?.();
    const stay = await hooks.at?.(i);
    if (stay === "stay") {
      seenSleeps = w.clock.requests.length;
      continue;
    }
    await w.clock.advance(Math.max(0, req.until - w.clock.now()));
    w.failOnProblem();
  }
}

export default defineGrader<OutboxRelaySubmission>({
  exports: { startRelay: "function" },
  // Checks share nothing (each has its own database, proxy, exchange, clock and hosts) and mostly
  // wait: on confirms held for a while, on the broker, on host starts. Three at a time.
  concurrency: 3,
  checks: [
    {
      name: "pending rows are published in created_at order (then id), on a confirm channel, and each is marked once its confirm arrived",
      hint: "SELECT … WHERE processed_at IS NULL ORDER BY created_at, id LIMIT batchSize; publish each row on a confirm channel, wait for its ack, then UPDATE … SET processed_at. Poll again at once after a pass with rows; sleep pollIntervalMs on the clock only when there are none.",
      timeoutMs: 15000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const rows = makeRows(t.rng, t.rng.int(2 * s.batchSize + 1, 3 * s.batchSize + 2), w.clock.now() - 3_600_000, "a");
        await w.insert(rows);
        const ctx = `With ${rows.length} pending rows (${settingsText(s)}):`;
        noSleepWhilePending(w, ctx);
        await w.start(await t.learnerHost());
        await w.relayOf(w.relays[0]!);
        await waitIdle(w, ctx);
        judgeWire(w, rows, ctx);
        await judgeEnd(w, ctx, new Set(), new Map());
        const open = w.clock.open();
        if (open.length !== 1) t.fail(`${ctx} Once every row was marked, your relay had ${open.length} sleeps running on the clock (${open.map((r) => `${r.ms} ms`).join(", ")}); one loop, one sleep of pollIntervalMs.`);
        await w.stopAll();
      },
    },
    {
      name: "rows inserted while the relay runs are published: after the rows of the current pass when it is busy, at the next poll when it is idle",
      hint: "Poll the table again after every pass, and after every sleep of pollIntervalMs: rows written by the service meanwhile are pending like any other. A relay that never looks again, or polls on a real timer, misses them.",
      timeoutMs: 15000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const base = w.clock.now() - 3_600_000;
        const first = makeRows(t.rng, t.rng.int(s.batchSize + 1, 2 * s.batchSize), base, "a");
        // Newer rows, and one from a transaction that commits late: older than every row of the
        // first poll, so it shows where that poll ended (a poll takes at most batchSize rows).
        const late = makeRows(t.rng, 1, base - t.rng.int(1, 60_000), "l")[0]!;
        let nBusy = t.rng.int(2, s.batchSize + 2);
        // The pass that publishes the newest of these is short (fewer than batchSize rows) every run.
        if ((first.length + nBusy + 1) % s.batchSize === 0) nBusy += 1;
        const busy = t.rng.shuffle([late, ...makeRows(t.rng, nBusy, base + 600_000, "b")]);
        // Written while the relay publishes the newest of those, in its last, short pass.
        const busy2 = makeRows(t.rng, t.rng.int(1, s.batchSize), base + 900_000, "d");
        const later = makeRows(t.rng, t.rng.int(1, s.batchSize + 2), base + 1_200_000, "c");
        await w.insert(first);
        // While the relay publishes its second row, the service writes more rows.
        const second = contractOrder(first)[1]!.id;
        const newest = contractOrder(busy).at(-1)!.id;
        let inserted: Promise<void> | null = null;
        let inserted2: Promise<void> | null = null;
        let raced = false;
        w.tracker.onChange(() => {
          if (!inserted && w.tracker.of(second).length) {
            w.seeded.push(...busy);
            // Synchronously, in the proxy's tap: the relay's pass is still running. If the relay
            // holds the write lock this very moment, a moment later instead.
            if (w.outbox.tryInsert(insertionOrder(t.rng, busy))) inserted = Promise.resolve();
            else {
              raced = true;
              inserted = w.outbox.insert(busy);
            }
          }
          if (inserted && !inserted2 && w.tracker.of(newest).length) {
            w.seeded.push(...busy2);
            if (w.outbox.tryInsert(insertionOrder(t.rng, busy2))) inserted2 = Promise.resolve();
            else {
              raced = true;
              inserted2 = w.outbox.insert(busy2);
            }
          }
        });
        const ctx =
          `With ${first.length} pending rows (${settingsText(s)}), ${busy.length} more inserted while your relay published the second (one of them, ${describeValue(late.id)}, older than all), ` +
          `and ${busy2.length} more while it published the newest of those:`;
        noSleepWhilePending(w, ctx, () => raced);
        await w.start(await t.learnerHost());
        await w.relayOf(w.relays[0]!);
        await waitIdle(w, ctx);
        if (!inserted) t.fail(`${ctx} Your relay never published row ${describeValue(second)}.`);
        await inserted;
        if (!inserted2) t.fail(`${ctx} Your relay never published row ${describeValue(newest)}.`);
        await inserted2;
        await waitIdle(w, ctx);
        // Where the first poll ended: the rows of it that went out before the late row.
        const wire = [...new Set(w.tracker.publishes.map((p) => p.messageId))];
        const firstIds = new Set(first.map((r) => r.id));
        const k = wire.indexOf(late.id) < 0 ? 0 : wire.slice(0, wire.indexOf(late.id)).filter((id) => id !== undefined && firstIds.has(id)).length;
        if (!raced && k > s.batchSize) {
          t.fail(`${ctx} Your relay published ${k} of the first ${first.length} rows before ${describeValue(late.id)}, inserted while it published the second of them: its first poll took more than batchSize (${s.batchSize}) rows. Poll at most batchSize rows: LIMIT batchSize.`);
        }
        const order = [...contractOrder(first).slice(0, k), ...contractOrder(w.seeded.filter((r) => !contractOrder(first).slice(0, k).includes(r)))];
        // Idle now: the service writes more rows. Nothing may happen until the clock moves.
        const published = w.tracker.publishes.length;
        await w.insert(later);
        await w.relays[0]!.host.turns();
        await sleep(30);
        await w.relays[0]!.host.turns();
        const ctx2 = `${ctx} Then, while your relay slept its poll interval, ${later.length} more rows were inserted`;
        if (w.tracker.publishes.length !== published) {
          t.fail(`${ctx2}, and your relay published ${w.tracker.publishes.length - published} message(s) before the clock moved: wait for the poll interval on the clock, not on a real timer or in a loop.`);
        }
        const sleepNow = w.clock.open().find((r) => r.ms === s.pollIntervalMs);
        if (!sleepNow) t.fail(`${ctx2}; your relay was not sleeping its poll interval on the clock.`);
        await w.clock.advance(sleepNow.until - w.clock.now());
        await waitIdle(w, `${ctx2}, and the clock moved ${s.pollIntervalMs} ms.`);
        const order2 = [...order, ...contractOrder(later)];
        judgeWire(w, w.seeded, ctx2 + ";", order2);
        await judgeEnd(w, `${ctx2}:`, new Set(), new Map(), order2);
        await w.stopAll();
      },
    },
    {
      name: "a row is marked processed only after the broker's confirm for it reached the relay, however long the confirm takes",
      hint: "Publish on a confirm channel and mark the row in the publish callback (or after waitForConfirms) once it has succeeded: never right after publish(). A confirm has no timeout: keep waiting, don't publish the row again, don't start another pass.",
      timeoutMs: 30000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const rows = makeRows(t.rng, t.rng.int(2, s.batchSize + 2), w.clock.now() - 3_600_000, "a");
        await w.insert(rows);
        w.proxy.hold("toClient", isConfirm);
        w.tracker.holding = true;
        const ctx = `With ${rows.length} pending rows (${settingsText(s)}), the grader held the broker's confirms for ${HOLD_MS / 1000} s of real time (longer while a real-time timer of your relay was pending) while the clock ran on:`;
        noSleepWhilePending(w, ctx);
        const host = await t.learnerHost();
        // Timers already there before the relay started are not the relay's.
        const timersBefore = await host.timers();
        await w.start(host);
        await w.relayOf(w.relays[0]!);
        await w.until(
          () => w.tracker.publishes.length > 0,
          () => `${ctx} Your relay published nothing within ${REACT_MS / 1000} s.`,
        );
        // Time passes while the confirms are held: far beyond any backoff, and every sleep the
        // relay asks for ends (a relay that polls again meanwhile publishes its rows twice).
        // A real-time timer the relay set while waiting (a confirm timeout that gives up, or one
        // that treats the silence as success) is watched out: the hold lasts past it.
        const start = Date.now();
        let until = start + HOLD_MS;
        let nextLook = 0;
        await w.clock.advance(50 * s.maxDelayMs + 10 * s.pollIntervalMs);
        while (Date.now() < until && w.problems.length === 0) {
          for (const r of w.clock.open()) await w.clock.advance(Math.max(0, r.until - w.clock.now()));
          if (Date.now() >= nextLook) {
            nextLook = Date.now() + 200;
            const timers = newTimers(timersBefore, await host.timers());
            const long = timers.find((x) => x.ms > MAX_HOLD_MS - HOLD_MS);
            if (long) {
              t.fail(
                `${ctx} while the confirm was pending, your relay had a real-time timer of ${long.ms} ms pending (${long.callback || "a callback"}). ` +
                  `Waiting for a confirm has no timeout of its own, and every wait goes through the clock: never setTimeout.`,
              );
            }
            for (const x of timers) until = Math.min(start + MAX_HOLD_MS, Math.max(until, Date.now() + x.ms + 500));
          }
          await sleep(20);
        }
        w.failOnProblem();
        const twice = rows.find((r) => w.tracker.of(r.id).length > 1);
        if (twice) t.fail(`${ctx} row ${describeValue(twice.id)} was published ${w.tracker.of(twice.id).length} times while its confirm was pending: keep waiting for the confirm; don't time out and don't start another pass.`);
        const retried = w.events.find((e) => e.kind === "retry");
        if (retried) t.fail(`${ctx} your relay recorded a failure on row ${describeValue(retried.id)} (error ${describeValue(retried.after.error)}) while its confirm was only late: waiting for a confirm has no timeout of its own.`);
        const plain = w.tracker.publishes.find((p) => p.seq === 0);
        if (plain) t.fail(`${ctx} your relay published row ${describeValue(plain.messageId)} on a channel without publisher confirms (no confirm.select): use connection.createConfirmChannel().`);
        w.proxy.release();
        w.tracker.released();
        w.onSleep = null;
        await waitIdle(w, `${ctx} Then the confirms went through.`);
        judgeWire(w, rows, ctx);
        await judgeEnd(w, ctx, new Set(), new Map());
        await w.stopAll();
      },
    },
    {
      name: "a publish the broker nacks is a failed attempt: counted on the row, retried with exponential backoff, never marked",
      hint: "A basic.nack (the publish callback gets an error; waitForConfirms rejects) means the broker did not take the message. Record it on the row, back off on the clock, and publish the row again later.",
      timeoutMs: 15000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        // A queue bound to the exchange that refuses the event type of one row in the middle of the
        // first pass, which no other row has: the broker acks the rows before it, nacks every publish
        // of that row, and acks the rows behind it (a relay that publishes the whole pass at once
        // gets all three in one pass).
        const rows = makeRows(t.rng, t.rng.int(3, s.batchSize + 1), w.clock.now() - 3_600_000, "a");
        const head = contractOrder(rows)[t.rng.int(1, Math.min(s.batchSize, rows.length) - 2)]!;
        head.event_type = "order.refused";
        const refuse = `${w.queue}.refuse`;
        await w.gch.assertQueue(refuse, { durable: true, arguments: { "x-max-length": 0, "x-overflow": "reject-publish" } });
        await w.gch.bindQueue(refuse, w.exchange, head.event_type);
        await w.insert(rows);
        const nacks = t.rng.int(2, 4);
        const retries = new Map<string, number>();
        const ctx = () => `With ${rows.length} pending rows (${settingsText(s)}) and a broker that nacked every publish of row ${describeValue(head.id)} (the ${ordinal(contractOrder(rows).indexOf(head) + 1)} oldest) ${nacks} times:`;
        const host = await t.learnerHost();
        // Each nack waits at the proxy until the relay has published all it publishes without
        // hearing of it (a relay that publishes the whole pass at once has sent the rows behind by
        // then); once the nack has reached the relay, nothing more may go out before its backoff.
        let heard: { publishes: number; sleeps: number; nack: Publish | undefined } | null = null;
        let gateDone = false;
        const gate = w.proxy.stopAt("toClient", isNack);
        const settle = async (f: AmqpFrame) => {
          for (let n = -1; n !== w.tracker.publishes.length && !gateDone; ) {
            n = w.tracker.publishes.length;
            await host.turns().catch(() => {});
            await sleep(100);
          }
          if (gateDone) return;
          const nacked = [...w.tracker.publishes].reverse().find((p) => p.confirm?.how === "nack");
          heard = { publishes: w.tracker.publishes.length, sleeps: w.clock.requests.length, nack: nacked };
          gate.moveTo((g) => isNack(g) && g !== f);
        };
        gate.onStop((f) => void settle(f));
        w.tracker.onChange(() => {
          if (!heard || w.tracker.publishes.length <= heard.publishes) return;
          const h = heard;
          heard = null;
          if (w.clock.requests.length > h.sleeps) return;
          const p = w.tracker.publishes[h.publishes]!;
          w.problem(
            `${ctx()} After the broker's nack of row ${describeValue(h.nack?.messageId)} had reached your relay, it published row ${describeValue(p.messageId)} before asking the clock for its backoff sleep: ` +
              `a failure ends the pass at once. Publish nothing more of it; the rows behind the failed one wait until it has gone through (published after it, they reach consumers ahead of it).`,
          );
        });
        await w.start(host);
        await w.relayOf(w.relays[0]!);
        await playFailures(w, nacks, retries, ctx, 0, {
          beforeLast: async () => {
            await w.gch.unbindQueue(refuse, w.exchange, head.event_type);
          },
        });
        gateDone = true;
        gate.open();
        const mayRepeat = new Set(inFlight(w));
        mayRepeat.add(head.id);
        await waitIdle(w, `${ctx()} Then the broker took the messages again.`);
        if (w.proxy.brokerConnections > 1) {
          t.fail(`${ctx()} Once everything was through, your relay had ${w.proxy.brokerConnections} connections to the broker open: after a failed attempt, close the connection you drop before connecting again.`);
        }
        const nacked = w.tracker.publishes.filter((p) => p.confirm?.how === "nack").length;
        if (nacked < nacks) t.fail(`${ctx()} The grader saw only ${nacked} nacks on the wire.`);
        await judgeEnd(w, ctx(), mayRepeat, retries);
        await w.stopAll();
      },
    },
    {
      name: "the broker cut mid-stream and held down: exponential backoff on the clock, retry count and error in the row, nothing marked unconfirmed; back up: everything delivered in order",
      hint: "A failed attempt (the connection drops, connect() refuses) adds 1 to the oldest pending row's retry_count and sets its error, then sleeps min(maxDelayMs, baseDelayMs * 2 ** (retry_count - 1)) on the clock. Then reconnect and start again from that row. Never give up, never skip ahead.",
      timeoutMs: 20000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const base = w.clock.now() - 3_600_000;
        const rows = makeRows(t.rng, t.rng.int(2 * s.batchSize, 3 * s.batchSize), base, "a");
        await w.insert(rows);
        const order = contractOrder(rows);
        const cutAt = order[t.rng.int(1, s.batchSize + 1)]!;
        // Held down for longer than the seed's "RetryCount < 5", past the cap; a crash in between.
        const down = t.rng.int(6, 8);
        const crashAt = t.rng.int(2, down - 2);
        const retries = new Map<string, number>();
        const mayRepeat = new Set<string>();
        let restarted = false;
        const ctx = () =>
          `With ${rows.length} pending rows (${settingsText(s)}), the grader cut the connection as row ${describeValue(cutAt.id)} was being published and refused every connect for ${down} attempts` +
          `${restarted ? `, SIGKILLing your relay during the backoff after failure ${crashAt} and starting a new one` : ""}:`;
        const gate = w.proxy.stopAt("toBroker", isPublishOf(cutAt.id));
        let sleepsAtCut = 0;
        gate.onStop(() => {
          for (const id of inFlight(w)) mayRepeat.add(id);
          mayRepeat.add(cutAt.id);
          sleepsAtCut = w.clock.requests.length;
          w.down = true;
          w.proxy.cut();
        });
        const first = await t.host();
        await w.start(first);
        await w.relayOf(w.relays[0]!);
        await w.until(
          () => w.down,
          () => `${ctx()} Your relay never published row ${describeValue(cutAt.id)} within ${REACT_MS / 1000} s.`,
        );
        gate.open();
        await playFailures(w, down, retries, ctx, sleepsAtCut, {
          at: async (i) => {
            if (i !== crashAt) return;
            // The service dies during its backoff; a new process takes over, the broker still down,
            // and tries at once.
            await first.kill();
            w.clock.abandonOpen();
            restarted = true;
            w.notBefore = -Infinity;
            await w.start(await t.host());
            return "stay";
          },
          beforeLast: () => w.up(),
        });
        await waitIdle(w, `${ctx()} Then the broker came back.`);
        const ctx2 = `${ctx()} Once everything was through, `;
        // A second outage after the steady state: the connection dies as the broker's confirm
        // for a row is on its way (the broker has the message; the relay never hears of it).
        const more = makeRows(t.rng, t.rng.int(3, s.batchSize + 2), base + 600_000, "b");
        const victim = contractOrder(more)[t.rng.int(0, more.length - 2)]!;
        const down2 = t.rng.int(2, 3);
        const gate2 = w.proxy.stopAt("toClient", (f) => {
          const p = w.tracker.confirms(f, victim.id);
          if (p?.confirm) p.confirm.forwarded = false;
          return p !== null;
        });
        let sleepsAtCut2 = 0;
        gate2.onStop(() => {
          for (const id of inFlight(w)) mayRepeat.add(id);
          sleepsAtCut2 = w.clock.requests.length;
          w.down = true;
          w.proxy.cut();
        });
        await w.insert(more);
        const idleSleep = w.clock.open().find((r) => r.ms === s.pollIntervalMs)!;
        await w.clock.advance(idleSleep.until - w.clock.now());
        const ctx3 = () => `${ctx2}${more.length} rows more were inserted, and the grader cut the connection as the broker's confirm for row ${describeValue(victim.id)} was on its way, then refused ${down2 - 1} connect(s):`;
        await w.until(
          () => w.down,
          () => `${ctx3()} Your relay never got that far within ${REACT_MS / 1000} s (the clock was moved past its poll interval).`,
        );
        gate2.open();
        await playFailures(w, down2, retries, ctx3, sleepsAtCut2, { beforeLast: () => w.up() });
        await waitIdle(w, `${ctx3()} Then the broker came back.`);
        await judgeEnd(w, ctx3(), mayRepeat, retries);
        await w.stopAll();
      },
    },
    {
      name: "a SIGKILL between the broker's confirm and the mark: after a restart the row is published again (at least once), never lost, and the order holds",
      hint: "Mark a row only after its confirm, and let a restarted relay simply start from the oldest pending row: a row confirmed but not yet marked when the process died is published again, which is what at-least-once means. Consumers deduplicate by messageId.",
      timeoutMs: 20000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const rows = makeRows(t.rng, t.rng.int(2 * s.batchSize + 2, 3 * s.batchSize + 2), w.clock.now() - 3_600_000, "a");
        await w.insert(rows);
        const order = contractOrder(rows);
        // First crash: the broker's confirm for row k is at the proxy; the relay never gets it.
        const k = t.rng.int(0, s.batchSize);
        // Second crash, in the next process: inside the relay's own UPDATE that marks row m.
        const m = t.rng.int(k + 2, order.length - 2);
        const mayRepeat = new Set<string>();
        const first = await t.host();
        const gate = w.proxy.stopAt("toClient", (f) => {
          const p = w.tracker.confirms(f, order[k]!.id);
          if (p?.confirm) p.confirm.forwarded = false;
          return p !== null && p.process === 1;
        });
        gate.onStop(() => void first.kill());
        const ctx1 = `With ${rows.length} pending rows (${settingsText(s)}), the grader SIGKILLed your relay as the broker's confirm for row ${describeValue(order[k]!.id)} (the ${ordinal(k + 1)} oldest) reached the proxy`;
        await w.start(first);
        await w.until(
          () => !first.alive,
          () => `${ctx1}: the relay never published it within ${REACT_MS / 1000} s.`,
        );
        await first.exited;
        w.clock.abandonOpen();
        gate.open();
        for (const id of inFlight(w)) mayRepeat.add(id);
        if (w.outbox.row(order[k]!.id)?.processed_at) t.fail(`${ctx1}; after the crash the row is marked processed, though the relay never had its confirm.`);
        const second = await t.host();
        let killedAtMark = false;
        w.onHook = (e, run) => {
          if (run.process !== 2 || e.kind !== "mark" || e.id !== order[m]!.id || killedAtMark) return "go";
          killedAtMark = true;
          return "kill";
        };
        const ctx2 = `${ctx1}, then started a new relay and SIGKILLed it inside its UPDATE marking row ${describeValue(order[m]!.id)} (the ${ordinal(m + 1)} oldest)`;
        await w.start(second);
        await w.until(
          () => !second.alive,
          () => `${ctx2.replace(/, then started.*/, ", then started a new relay")}: within ${REACT_MS / 1000} s it never marked row ${describeValue(order[m]!.id)} (marked: ${w.outbox.rows().filter((r) => r.processed_at).length} of ${rows.length}).`,
        );
        await second.exited;
        w.clock.abandonOpen();
        for (const id of inFlight(w)) mayRepeat.add(id);
        if (w.outbox.row(order[m]!.id)?.processed_at) t.fail(`${ctx2}; after the crash the row is marked processed: its mark committed before the statement that wrote it returned?`);
        w.onHook = null;
        const ctx3 = `${ctx2}, then started a third:`;
        await w.start(await t.learnerHost());
        await waitIdle(w, ctx3);
        await judgeEnd(w, ctx3, mayRepeat, new Map());
        const again = [order[k]!, order[m]!].filter((r) => w.tracker.of(r.id).length < 2);
        if (again.length) t.fail(`${ctx3} row ${describeValue(again[0]!.id)} was published only once: after the crash it was still pending, so the next relay must publish it again.`);
        await w.stopAll();
      },
    },
    {
      name: "stop() ends the relay at once, idle or backing off: no sleep left running, nothing published or written afterwards, the connection closed",
      hint: "Pass an AbortSignal to every clock.sleep and abort it in stop(); close the connection (a publish waiting for its confirm is abandoned, not counted as a failure); resolve once the loop has ended. After that the relay touches nothing.",
      timeoutMs: 15000,
      async run(t: T) {
        const s = drawSettings(t.rng);
        const w = await World.create(t, s);
        const host = await t.learnerHost();
        const rows = makeRows(t.rng, t.rng.int(1, 3), w.clock.now() - 3_600_000, "a");
        await w.insert(rows);
        const runA = await w.start(host);
        const relayA = await w.relayOf(runA);
        await waitIdle(w, `With ${rows.length} pending rows (${settingsText(s)}):`);
        await stopAndJudge(w, host, runA, relayA, `Your relay was idle, sleeping its poll interval on the clock; the grader called stop() without moving the clock:`);
        // A second relay, started while the broker is down: stopped during its backoff.
        const more = makeRows(t.rng, t.rng.int(1, 3), w.clock.now() - 1_800_000, "b");
        await w.insert(more);
        w.down = true;
        const sleeps = w.clock.requests.length;
        const runB = await w.start(host);
        const relayB = await w.relayOf(runB);
        await w.until(
          () => w.clock.requests.length > sleeps,
          () => `A relay started while the broker was down (connect() refused) asked the clock for no backoff sleep within ${REACT_MS / 1000} s.`,
        );
        await stopAndJudge(w, host, runB, relayB, `A relay started while the broker was down was sleeping its backoff on the clock; the grader called stop() without moving the clock:`);
        // A third, stopped while a publish waits for its confirm (the grader holds the confirms):
        // stop() may not wait for it, and abandoning it is no failure of the row's.
        w.up();
        w.proxy.hold("toClient", isConfirm);
        w.tracker.holding = true;
        const published = w.tracker.publishes.length;
        const runC = await w.start(host);
        const relayC = await w.relayOf(runC);
        await w.until(
          () => w.tracker.publishes.slice(published).some((p) => p.confirm !== null && !p.confirm.forwarded),
          () => `A relay started with rows pending published nothing the broker confirmed within ${REACT_MS / 1000} s.`,
        );
        await stopAndJudge(
          w,
          host,
          runC,
          relayC,
          `A relay was waiting for the broker's confirm of row ${describeValue(w.tracker.publishes[published]?.messageId)} (the grader held it); the grader called stop():`,
          "It waited for the confirm: close the connection in stop(), so the publish waiting for it fails at once (its row stays pending, and the next relay publishes it again).",
        );
        w.proxy.release();
        w.tracker.released();
      },
    },
  ],
});

async function stopAndJudge(
  w: World,
  host: import("../../../src/kit/index.ts").Host,
  run: RunningRelay,
  relay: import("../../../src/contracts/outbox-relay.ts").Relay,
  ctx: string,
  hang = "Pass an AbortSignal to clock.sleep and abort it in stop(): the clock does not move by itself.",
): Promise<void> {
  const t = w.t;
  let stopped: { ok: boolean; error?: unknown } | null = null;
  const eventsAtStop = w.events.length;
  relay.stop().then(
    () => {
      stopped = { ok: true };
      w.poke();
    },
    (error: unknown) => {
      stopped = { ok: false, error };
      w.poke();
    },
  );
  await w.until(
    () => stopped !== null,
    () => `${ctx} stop() did not resolve within ${REACT_MS / 1000} s of real time. ${hang}`,
  );
  const s = stopped as unknown as { ok: boolean; error?: unknown };
  if (!s.ok) t.fail(`${ctx} stop() rejected: ${errorText(s.error)}.`);
  const written = w.events.slice(eventsAtStop).find((e) => e.kind !== "mark");
  if (written) {
    t.fail(`${ctx} while stopping, your relay wrote retry_count ${written.after.retry_count} and error ${describeValue(written.after.error)} to row ${describeValue(written.id)}: stopping is no failure of the row's. Leave it pending as it is; the next relay publishes it again.`);
  }
  await host.turns();
  const open = w.clock.open();
  if (open.length) t.fail(`${ctx} after stop() resolved, ${open.length} sleep(s) were still running on the clock (${open.map((r) => `${r.ms} ms`).join(", ")}): abort them in stop().`);
  await w.until(
    () => w.proxy.brokerConnections === 0,
    () => `${ctx} ${REACT_MS / 1000} s after stop() resolved, your relay's connection to the broker was still open: close it in stop().`,
  );
  const published = w.tracker.publishes.length;
  const events = w.events.length;
  const attempts = w.attempts.length;
  await w.insert(makeRows(t.rng, 2, w.clock.now() - 60_000, `z${run.process}`));
  await w.clock.advance(10 * Math.max(w.settings.pollIntervalMs, w.settings.maxDelayMs));
  await host.turns();
  await sleep(20);
  await host.turns();
  if (w.tracker.publishes.length !== published || w.events.length !== events || w.attempts.length !== attempts) {
    t.fail(
      `${ctx} after stop() resolved, the grader inserted 2 rows and moved the clock far ahead; your relay then ` +
        [w.tracker.publishes.length !== published ? "published" : "", w.events.length !== events ? "wrote to the outbox" : "", w.attempts.length !== attempts ? "called connect()" : ""].filter(Boolean).join(" and ") +
        `. A stopped relay touches nothing.`,
    );
  }
  void HostGone;
}
