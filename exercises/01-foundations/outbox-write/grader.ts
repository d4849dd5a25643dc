import { defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { PlaceOrder } from "../../../src/contracts/outbox-write.ts";
import { CALL_MS, World, errorText, newOrder, newReason, q, type Proc, type Submission, type T } from "./grader-util.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * How long the grader waits for the second process to be stuck behind the first one's write
 * lock before it lets the first one commit. A process that reads and then waits for the lock is
 * blocked within a millisecond; this only makes sure it got that far on a loaded box.
 */
const BLOCK_MS = 40;
/**
 * After the last request, with no timer of the learner's pending: long enough for a publish
 * chained on promises or immediates to show.
 */
const AFTERWARDS_MS = 300;
/**
 * With timers pending: the longest the grader waits for them to fire (and publish, if that is
 * what they do) before it names the ones still pending.
 */
const TIMERS_MS = 5_000;

async function learner(t: T, opts: { pin?: boolean } = {}): Promise<{ world: World; proc: Proc }> {
  const world = new World(t, opts);
  return { world, proc: await world.open(await t.learnerHost()) };
}

/** Places `n` orders that must succeed; returns them. */
async function placeSome(world: World, proc: Proc, n: number, context = ""): Promise<PlaceOrder[]> {
  const out: PlaceOrder[] = [];
  for (let i = 0; i < n; i++) {
    const cmd = newOrder(world.t.rng);
    await world.placeOk(proc, cmd, context);
    out.push(cmd);
  }
  return out;
}

type Settled = { ok: true } | { ok: false; error: unknown };
const settle = (p: Promise<unknown>): Promise<Settled> =>
  p.then(
    () => ({ ok: true as const }),
    (error: unknown) => ({ ok: false as const, error }),
  );

export default defineGrader<Submission>({
  exports: { createOrderService: "function" },
  shareLearnerHost: true,
  checks: [
    {
      name: "placing an order writes the order and exactly one order.placed outbox row: a v4 UUID, the order id, a JSON payload, created_at from the clock",
      hint: "In one db.transaction(...).immediate(): INSERT INTO orders (id, customer_id, status, total_cents) VALUES (?, ?, 'placed', ?), then INSERT INTO outbox (id, aggregate_id, event_type, payload, created_at) VALUES (randomUUID(), orderId, 'order.placed', JSON.stringify({ orderId, customerId, lines, totalCents }), new Date(clock.now()).toISOString()).",
      async run(t) {
        const { world, proc } = await learner(t);
        await placeSome(world, proc, 3);
        // A big one, and one with a zero-price line.
        await world.placeOk(proc, newOrder(t.rng, t.rng.int(20, 40)));
        const free = newOrder(t.rng, 2);
        free.lines[0]!.unitPriceCents = 0;
        await world.placeOk(proc, free);
      },
    },
    {
      name: "cancelling an order sets it cancelled and writes exactly one order.cancelled outbox row",
      hint: "In one immediate transaction: read the order; if it is 'placed', UPDATE orders SET status = 'cancelled', cancel_reason = ? and INSERT the order.cancelled row with payload JSON.stringify({ orderId, reason }).",
      async run(t) {
        const { world, proc } = await learner(t);
        const orders = await placeSome(world, proc, 4);
        for (const o of t.rng.shuffle(orders).slice(0, 3)) await world.cancelOk(proc, o.orderId, newReason(t.rng));
        await placeSome(world, proc, 1, ", after some cancellations");
      },
    },
    {
      name: "a refused request throws an OrderRejected and writes nothing: an existing order id, an unknown order, an order already cancelled",
      hint: "Check first, inside the transaction, and throw before writing anything: a duplicate order id, an unknown order and a cancelled order are OrderRejected. An outbox row must never be written for a change that did not happen.",
      async run(t) {
        const { world, proc } = await learner(t);
        const [a, b] = await placeSome(world, proc, 2);
        const dup: PlaceOrder = { ...newOrder(t.rng), orderId: a!.orderId };
        await world.refused(proc, world.placeLabel(dup), () => proc.service.placeOrder(dup), `order ${q(a!.orderId)} exists already`);
        const ghost = `${a!.orderId}-ghost`;
        const reason = newReason(t.rng);
        await world.refused(proc, world.cancelLabel(ghost, reason), () => proc.service.cancelOrder(ghost, reason), `there is no order ${q(ghost)}`);
        await world.cancelOk(proc, b!.orderId, newReason(t.rng));
        const again = newReason(t.rng);
        await world.refused(proc, world.cancelLabel(b!.orderId, again), () => proc.service.cancelOrder(b!.orderId, again), `order ${q(b!.orderId)} is cancelled already`);
        // A cancelled order's id is taken too: placing it again is a duplicate, not a new order.
        const redo: PlaceOrder = { ...newOrder(t.rng), orderId: b!.orderId };
        await world.refused(proc, world.placeLabel(redo), () => proc.service.placeOrder(redo), `order ${q(b!.orderId)} exists already (cancelled)`);
        await world.cancelOk(proc, a!.orderId, newReason(t.rng), ", after the refused requests");
      },
    },
    {
      name: "when the second write fails, the first is rolled back and the request fails",
      hint: "Both writes inside one db.transaction(fn): when the second INSERT throws, better-sqlite3 rolls the transaction back and rethrows. Don't catch the error to carry on or to commit what you have: let it reach the caller.",
      async run(t) {
        const { world, proc } = await learner(t);
        const [o] = await placeSome(world, proc, 1);
        // The grader makes the write on the second table fail, whichever the service writes first.
        for (const kind of t.rng.shuffle(["place", "cancel"] as const)) {
          world.onSecondWrite = () => "throw";
          const cmd = newOrder(t.rng);
          const reason = newReason(t.rng);
          const what = kind === "place" ? world.placeLabel(cmd) : world.cancelLabel(o!.orderId, reason);
          const r = await world.request(proc, what, () => (kind === "place" ? proc.service.placeOrder(cmd) : proc.service.cancelOrder(o!.orderId, reason)));
          world.onSecondWrite = null;
          const req = proc.lastReq!;
          if (!req.struck) {
            t.fail(`${what} wrote only to ${[...new Set(req.writes.map((w) => w.table))].join(" and ") || "no table"} (the grader's triggers saw every write): it must write the order and its outbox row.`);
          }
          const at = `While ${what} ran, the grader made your ${req.struckAt!.op} on ${req.struckAt!.table} fail (after your ${req.writes[0]!.op} on ${req.writes[0]!.table})`;
          if ("killed" in r || r.ok) t.fail(`${at}, yet ${what} returned normally. The caller must learn that nothing happened: let the error out of the transaction.`);
          await world.expectDb(at, proc);
          // Nothing is left behind: the same request goes through now.
          if (kind === "place") await world.placeOk(proc, cmd, ", again, after its first try failed");
          else await world.cancelOk(proc, o!.orderId, reason, ", again, after its first try failed");
          world.advance();
        }
      },
    },
    {
      name: "a SIGKILL between the state write and the outbox write leaves neither, and a new process can redo the request",
      hint: "One transaction holds both writes until COMMIT: a process killed before it reaches COMMIT leaves nothing (SQLite rolls it back when the file is opened next). Two transactions, or statements in autocommit mode, leave the first write behind.",
      async run(t) {
        const world = new World(t);
        let proc = await world.open(await t.host());
        const [o] = await placeSome(world, proc, 2);
        const next = t.host();
        next.catch(() => {});
        for (const kind of ["place", "cancel"] as const) {
          const cmd = newOrder(t.rng);
          const reason = newReason(t.rng);
          const what = kind === "place" ? world.placeLabel(cmd) : world.cancelLabel(o!.orderId, reason);
          world.onSecondWrite = () => "kill";
          const r = await world.request(proc, what, () => (kind === "place" ? proc.service.placeOrder(cmd) : proc.service.cancelOrder(o!.orderId, reason)));
          world.onSecondWrite = null;
          const req = proc.lastReq!;
          if (!("killed" in r)) {
            t.fail(
              `${what} ${r.ok ? "returned" : `threw ${errorText(r.error)}`} after writing only to ${[...new Set(req.writes.map((w) => w.table))].join(" and ") || "no table"} (the grader's triggers saw every write): it must write the order and its outbox row.`,
            );
          }
          await proc.host.exited;
          const first = req.writes[0]!;
          const second = req.struckAt!;
          await world.expectDb(`The grader SIGKILLed your process inside ${what}, at its ${second.op} on ${second.table}, after its ${first.op} on ${first.table}. Then`);
          // A new process on the same file does it again, from scratch.
          proc = await world.open(await (kind === "place" ? next : t.host()));
          if (kind === "place") await world.placeOk(proc, cmd, ` in a new process, after the first try was killed between its two writes`);
          else await world.cancelOk(proc, o!.orderId, reason, ` in a new process, after the first try was killed between its two writes`);
        }
      },
    },
    {
      name: "every commit holds a state change together with its outbox row: none without the other, at any moment",
      hint: "Every commit your service makes is kept (the grader pins the WAL) and the database is rebuilt as it was after each one. If any of them holds an order without its event, or an event without its order, a crash right then would have left it so: one transaction per request.",
      async run(t) {
        const { world, proc } = await learner(t, { pin: true });
        const placed = await placeSome(world, proc, 5);
        const [x, y] = t.rng.shuffle(placed);
        await world.cancelOk(proc, x!.orderId, newReason(t.rng));
        const dup: PlaceOrder = { ...newOrder(t.rng), orderId: y!.orderId };
        await world.refused(proc, world.placeLabel(dup), () => proc.service.placeOrder(dup), `order ${q(y!.orderId)} exists already`);
        const reason = newReason(t.rng);
        await world.refused(proc, world.cancelLabel(x!.orderId, reason), () => proc.service.cancelOrder(x!.orderId, reason), `order ${q(x!.orderId)} is cancelled already`);
        await world.cancelOk(proc, y!.orderId, newReason(t.rng));
        await placeSome(world, proc, 2);
        const problem = world.firstUnpairedCommit();
        if (problem) t.fail(`Of the commits your service made for these requests, ${problem} One transaction per request: the order and its outbox row commit together.`);
      },
    },
    {
      name: "nothing is published in the request path: the bus is never called, not even after the commit",
      hint: "deps.bus is the relay's, not yours: the outbox row is the message. Publishing after the commit (awaited, or in the background) brings back the dual write: a crash between the commit and the publish loses the message, a failed publish after a commit can't be undone.",
      async run(t) {
        const { world, proc } = await learner(t);
        const [a] = await placeSome(world, proc, 3);
        await world.cancelOk(proc, a!.orderId, newReason(t.rng));
        const reason = newReason(t.rng);
        await world.refused(proc, world.cancelLabel(a!.orderId, reason), () => proc.service.cancelOrder(a!.orderId, reason), "the order is cancelled already");
        await proc.host.turns();
        // The host records the learner's timers (src/host/timers.ts), so the grader knows
        // whether anything is left scheduled instead of waiting out the longest delay a learner
        // might pick. The verdict on a timer that publishes still rests on the bus.
        const pending = await proc.host.timers();
        const wait = pending.length ? Math.min(TIMERS_MS, Math.max(...pending.map((p) => p.ms)) + 200) : AFTERWARDS_MS;
        await sleep(wait);
        await proc.host.turns();
        world.noPublish(`${wait} ms after the last request`);
        const left = await proc.host.timers();
        if (left.length) {
          const [first] = left;
          const what = first!.kind === "interval" ? `an interval every ${first!.ms} ms` : `a timer of ${first!.ms} ms`;
          t.fail(
            `Your service still had ${left.length === 1 ? what : `${left.length} timers (the longest: ${what})`} pending ${wait} ms after its last request settled (${first!.callback || "a callback"}). A request leaves nothing scheduled behind it: work on a timer is a publish or a relay inside the service, where a crash loses it; the relay is a process of its own.`,
          );
        }
      },
    },
    {
      name: "two processes writing one file at once lose nothing and duplicate nothing",
      hint: "Keep nothing about orders in memory: read them from the database, inside the transaction. Use IMMEDIATE transactions (db.transaction(fn).immediate()): the write lock first, then the reads, so the other process cannot slip a change between what you read and what you write, and you wait for the lock instead of failing with SQLITE_BUSY.",
      timeoutMs: 30_000,
      async run(t) {
        const world = new World(t, { pin: true });
        const [a, b] = await Promise.all([t.learnerHost().then((h) => world.open(h)), t.host().then((h) => world.open(h))]);
        const procs = [a!, b!];
        const name = (p: Proc) => `process ${p.n}`;
        const open: { cmd: PlaceOrder; by: Proc }[] = [];
        const rounds = 6;
        // Rounds in which the grader's own connection holds the write lock while the requests start,
        // and commits a write of its own before letting go: at least two, the seed says which.
        const holdRounds = new Set(t.rng.shuffle([0, 1, 2, 3, 4, 5]).slice(0, 2));
        for (let round = 0; round < rounds; round++) {
          world.advance();
          const from = world.now;
          const batch = procs.flatMap((p) => Array.from({ length: t.rng.int(3, 5) }, () => ({ cmd: newOrder(t.rng), by: p })));
          // Cancels across processes: an order the other process placed in an earlier round.
          const cross = procs.flatMap((p) => {
            const theirs = open.filter((o) => o.by !== p);
            return t.rng.shuffle(theirs).slice(0, 2).map((o) => ({ id: o.cmd.orderId, reason: newReason(t.rng), by: p, placedBy: o.by }));
          });
          for (const c of cross) open.splice(open.findIndex((o) => o.cmd.orderId === c.id), 1);
          const fire = () => [
            ...batch.map((x) => settle(x.by.service.placeOrder(x.cmd)).then((r) => ({ r, what: `${name(x.by)}'s ${world.placeLabel(x.cmd)}` }))),
            ...cross.map((c) => settle(c.by.service.cancelOrder(c.id, c.reason)).then((r) => ({ r, what: `${name(c.by)}'s ${world.cancelLabel(c.id, c.reason)} (an order ${name(c.placedBy)} placed)` }))),
          ];
          let calls: Promise<{ r: Settled; what: string }>[];
          const hold = holdRounds.has(round);
          if (hold) {
            world.db.exec("BEGIN IMMEDIATE");
            try {
              calls = fire();
              await sleep(5);
              world.db.prepare("INSERT INTO grader_ticks (at) VALUES (?)").run(new Date().toISOString());
              world.db.exec("COMMIT");
            } finally {
              if (world.db.inTransaction) world.db.exec("ROLLBACK");
            }
          } else calls = fire();
          const results = await t.within(`${calls.length} requests in two processes at once`, CALL_MS, Promise.all(calls));
          const setting = `Round ${round + 1}: two processes sent ${batch.length} placeOrder and ${cross.length} cancelOrder requests at once${hold ? ", while the grader's own connection held the write lock for a moment and committed a write of its own" : ""}`;
          for (const { r, what } of results) {
            if (!r.ok) {
              const busy = String((r.error as { code?: unknown } | null)?.code ?? "").startsWith("SQLITE_BUSY");
              t.fail(
                `${setting}; ${what} threw ${errorText(r.error)}. Nothing refused it (the order id was new, or the order 'placed'): the request was lost.${busy ? " SQLITE_BUSY: take the write lock at the start of the transaction (db.transaction(fn).immediate()); a deferred transaction that has read cannot wait for it." : " Read the orders from the database inside the transaction: the other process placed some of them."}`,
              );
            }
          }
          for (const x of batch) world.expectPlaced(x.cmd, null, [from, world.now], `${name(x.by)}'s ${world.placeLabel(x.cmd)}`);
          for (const c of cross) world.expectCancelled(c.id, c.reason, null, [from, world.now], `${name(c.by)}'s ${world.cancelLabel(c.id, c.reason)}`);
          open.push(...batch);
          await world.expectDb(setting, a);
          // Both cancel the same order: one wins, the other is refused, one event.
          if (round % 2 === 1) await race(t, world, procs, open, name);
        }
        const problem = world.firstUnpairedCommit();
        if (problem) t.fail(`Of the commits the two processes made, ${problem}`);
      },
    },
  ],
});

/**
 * Both processes cancel the same order. The first is held inside its first write for that order
 * (it has the write lock, nothing committed) until the second is stuck behind the lock (or has
 * answered); then the first goes on. Exactly one may succeed, the other must be an OrderRejected,
 * and the outbox gets one order.cancelled row.
 */
async function race(t: T, world: World, procs: Proc[], open: { cmd: PlaceOrder; by: Proc }[], name: (p: Proc) => string): Promise<void> {
  const i = t.rng.int(0, open.length - 1);
  const target = open.splice(i, 1)[0]!.cmd.orderId;
  const [first, second] = t.rng.shuffle(procs) as [Proc, Proc];
  const reasons = [newReason(t.rng), newReason(t.rng)] as const;
  world.advance();
  const from = world.now;
  let release!: () => void;
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  world.onWrite = (p, w) => {
    if (p !== first || w.id !== target) return undefined;
    world.onWrite = null;
    holding();
    return new Promise<undefined>((r) => (release = () => r(undefined)));
  };
  const one = settle(first.service.cancelOrder(target, reasons[0]));
  const heldOrDone = await t.within(`${name(first)}'s cancelOrder(${q(target)})`, CALL_MS, Promise.race([held.then(() => "held" as const), one.then(() => "done" as const)]));
  if (heldOrDone === "done") {
    world.onWrite = null;
    t.fail(`${name(first)}'s ${world.cancelLabel(target, reasons[0])} settled (${describeValue(await one)}) without writing anything for order ${q(target)}, which is 'placed': it must cancel it.`);
  }
  const two = settle(second.service.cancelOrder(target, reasons[1]));
  await Promise.race([second.host.turns(), sleep(BLOCK_MS)]);
  release();
  const [r1, r2] = await t.within(`two cancelOrder(${q(target)}) at once`, CALL_MS, Promise.all([one, two]));
  const setting = `${name(first)} and ${name(second)} both cancelled order ${q(target)}; ${name(first)} was held inside its write (holding the write lock) until ${name(second)}'s request had started`;
  const text = (r: Settled) => (r.ok ? "succeeded" : `threw ${errorText(r.error)}`);
  if (!r1.ok) t.fail(`${setting}. ${name(first)}'s request ${text(r1)}; it had the lock and the order was 'placed', so it must succeed.`);
  if (r2.ok) {
    world.expectCancelled(target, reasons[0], null, [from, world.now], `${name(first)}'s ${world.cancelLabel(target, reasons[0])}`);
    const rows = world.rows().outbox.filter((r) => r.aggregate_id === target && r.event_type === "order.cancelled").length;
    t.fail(
      `${setting}. Both succeeded; the outbox now holds ${rows} order.cancelled rows for it. The second read the order as 'placed' before the first committed, then wrote anyway: read it inside an IMMEDIATE transaction (the lock first, then the read), so it sees 'cancelled' and throws an OrderRejected.`,
    );
  }
  if ((r2.error as Error | null)?.name !== "OrderRejected") {
    const busy = String((r2.error as { code?: unknown } | null)?.code ?? "").startsWith("SQLITE_BUSY");
    t.fail(
      `${setting}. ${name(second)}'s request threw ${errorText(r2.error)}; the order was cancelled by then, so it must throw an OrderRejected.${busy ? " SQLITE_BUSY: a deferred transaction read the order, then could not take the write lock after the other process committed; take the lock first (db.transaction(fn).immediate())." : ""}`,
    );
  }
  world.expectCancelled(target, reasons[0], null, [from, world.now], `${name(first)}'s ${world.cancelLabel(target, reasons[0])}`);
  await world.expectDb(`${setting}`, first);
}
