import { isDeepStrictEqual } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Channel, ChannelModel, ConfirmChannel } from "amqplib";
import Database from "better-sqlite3";
import { History, QueueObserver, amqpCode, brokerText, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Rng, Worker, WorkerEvent } from "../../../src/kit/index.ts";
import { MAX_PREFETCH, type AtLeastOnceConsumerSubmission, type Payment } from "../../../src/contracts/at-least-once-consumer.ts";
import { R, type KillPoint, type WorkerInput } from "./protocol.ts";

type T = CheckContext<AtLeastOnceConsumerSubmission>;

const WORKER = join(dirname(fileURLToPath(import.meta.url)), "worker.ts");

/** How long a run may take to apply a handful of payments (the reference needs well under a second). */
const SETTLE_MS = 8000;
/**
 * With payments missing, an empty queue (nothing ready) and no new delivery or ledger row for
 * this long, nothing more is coming: the missing payments are lost, and the check says so
 * without waiting out SETTLE_MS.
 */
const QUIET_MS = 3000;

const GONE = "The queue no longer exists: it was declared auto-delete (or exclusive), so it went away with its last consumer, taking the waiting payments with it.";

// ---------------------------------------------------------------- the grader's own view

/** The grader's own view of the broker, on its own connection. */
class Observer extends QueueObserver {
  /** Takes every ready message off the queue (auto-ack), returning their message ids. Null: no such queue. */
  async drainIds(queue: string): Promise<string[] | null> {
    const ch = await this.throwaway();
    const ids: string[] = [];
    try {
      for (let m = await ch.get(queue, { noAck: true }); m !== false; m = await ch.get(queue, { noAck: true })) {
        ids.push(String(m.properties.messageId));
      }
    } catch (e) {
      if (amqpCode(e) === 404) return null;
      throw e;
    }
    await ch.close().catch(() => {});
    return ids;
  }
}


function isCheckFailure(e: unknown): boolean {
  return (e as Error)?.name === "CheckFailure";
}

/** The grader's ledger: the only place the effect is recorded, read on the grader's own connection. */
interface LedgerRow {
  seq: number;
  message_id: string;
  payment: string;
  run: number;
  in_tx: number;
}

function openLedger(t: T): { db: Database.Database; path: string; rows(): LedgerRow[] } {
  const path = join(t.tmpDir, "payments.db");
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  db.exec(`
    CREATE TABLE ledger (
      seq        INTEGER PRIMARY KEY AUTOINCREMENT,
      message_id TEXT NOT NULL,
      payment    TEXT NOT NULL,
      run        INTEGER NOT NULL,
      in_tx      INTEGER NOT NULL,
      commit_check INTEGER REFERENCES ledger_commit_check (id) DEFERRABLE INITIALLY DEFERRED
    );
    -- Empty: a ledger row pointing at it makes the COMMIT of its transaction fail.
    CREATE TABLE ledger_commit_check (id INTEGER PRIMARY KEY);
    -- A ledger is append-only: a duplicate cannot be tidied away afterwards.
    CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
  `);
  t.defer(() => db.close());
  const select = db.prepare("SELECT seq, message_id, payment, run, in_tx FROM ledger ORDER BY seq");
  return { db, path, rows: () => select.all() as LedgerRow[] };
}

interface Sent {
  id: string;
  payment: Payment;
}

const ACCOUNTS = ["acct-17", "acct-23", "acct-42", "acct-51", "acct-68", "acct-90"];

function makePayments(rng: Rng, n: number, tag: string): Sent[] {
  const salt = Math.floor(rng.next() * 0xffffff).toString(16).padStart(6, "0");
  return Array.from({ length: n }, (_, i) => ({
    id: `pay-${tag}${salt}-${i + 1}`,
    payment: { account: rng.pick(ACCOUNTS), amountCents: 100 * rng.int(1, 250) },
  }));
}

/** Persistent messages with a messageId, on the grader's confirm channel: queued once this resolves. */
async function publish(gch: ConfirmChannel, queue: string, msgs: Sent[]): Promise<void> {
  for (const m of msgs) {
    gch.sendToQueue(queue, Buffer.from(JSON.stringify(m.payment)), { persistent: true, messageId: m.id, contentType: "application/json" });
  }
  await gch.waitForConfirms();
}

interface Setup {
  queue: string;
  obs: Observer;
  gch: ConfirmChannel;
  ledger: ReturnType<typeof openLedger>;
}

type Plan = Partial<Pick<WorkerInput, "holdDeliveries" | "kill" | "failFirstAttempt" | "failCommitOnce">>;

/**
 * The check's queue (declared by the learner's declareQueue), the grader's ledger and
 * connections, and one process per plan, started at once (tsx takes a while to boot) and held
 * at a gate until the check releases it.
 */
async function setup(t: T, plans: Plan[]): Promise<{ s: Setup; runs: Run[] }> {
  const queue = t.names.queue("payments");
  const ledger = openLedger(t);
  const [s, runs] = await Promise.all([
    (async (): Promise<Setup> => {
      const gconn = await t.rabbit.connect();
      const obs = new Observer(gconn);
      const gch = await gconn.createConfirmChannel();
      gch.on("error", () => {});
      await learnerDeclare(t, obs, queue);
      return { queue, obs, gch, ledger };
    })(),
    Promise.all(plans.map((plan, i) => startRun(t, queue, ledger.path, i + 1, plan))),
  ]);
  return { s, runs };
}

/** Calls the learner's declareQueue on a connection of its own, kept open until the check ends. */
async function learnerDeclare(t: T, obs: Observer, queue: string): Promise<ChannelModel> {
  const lconn = await t.rabbit.connect();
  const lch = await lconn.createChannel();
  // A broker error also rejects the pending call, where it is reported.
  lch.on("error", () => {});
  try {
    await t.within("declareQueue()", 5000, t.submission.declareQueue(lch, queue));
  } catch (e) {
    if (isCheckFailure(e)) throw e;
    t.fail(`declareQueue(ch, "${queue}") threw: ${brokerText(e)}`);
  }
  await lch.close().catch(() => {});
  let exists: boolean;
  try {
    exists = (await obs.count(queue)) !== null;
  } catch (e) {
    if (amqpCode(e) === 405) t.fail(`The queue declareQueue() made is exclusive (the broker says: ${brokerText(e)}): only the connection that declared it may use it, and it dies with that connection.`);
    throw e;
  }
  if (!exists) t.fail(`After declareQueue(ch, "${queue}") resolved, the broker has no queue of that name.`);
  return lconn;
}

// ---------------------------------------------------------------- runs of the learner's consumer

interface Run {
  worker: Worker;
  n: number;
  reports(name: string): WorkerEvent[];
}

async function startRun(t: T, queue: string, dbPath: string, n: number, plan: Plan): Promise<Run> {
  const input: WorkerInput = {
    amqpUrl: t.rabbit.url,
    queue,
    dbPath,
    run: n,
    gate: true,
    holdDeliveries: plan.holdDeliveries ?? false,
    kill: plan.kill ?? null,
    failFirstAttempt: plan.failFirstAttempt ?? [],
    failCommitOnce: plan.failCommitOnce ?? [],
  };
  const worker = await t.workers.start(WORKER, {
    input,
    // The gate and the stop point are answered by the check (worker.resume()).
    onCheckpoint: (e) => (e.name === "gate" || e.name === "stopped" ? "hold" : "continue"),
  });
  return { worker, n, reports: (name) => worker.events.filter((e) => e.type === "report" && e.name === name) };
}

/** Lets a process held at its gate go on (once it has got there: it may still be starting). */
async function release(run: Run): Promise<void> {
  await run.worker.waitFor((e) => e.type === "checkpoint" && e.name === "gate", 15_000, `process ${run.n} to start`);
  run.worker.resume();
}

/** Waits until startConsumer() resolved in that process; fails with what it threw otherwise. */
async function waitStarted(t: T, run: Run): Promise<void> {
  const e = await run.worker.waitFor((x) => x.name === R.started || x.name === R.startFailed, 10_000, `startConsumer() to resolve (process ${run.n})`);
  if (e.name === R.startFailed) t.fail(`startConsumer() failed: ${describeValue(e.data, 400)}`);
}

/** Exits of a process, as a promise that tells whether it ended at all within ms. */
function exitedWithin(run: Run, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | null> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    run.worker.exited,
    new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tail(log: string): string {
  const lines = log.trim().split("\n").filter(Boolean).slice(-5).join("\n");
  return lines ? ` Its last output:\n${lines}` : "";
}

/** What the learner's code did in a run, for messages (the verdict comes from the ledger and the queue). */
function whatItDid(run: Run): string {
  const parts: string[] = [];
  const opts = run.reports(R.consumeOptions)[0]?.data as { noAck?: boolean } | undefined;
  if (opts?.noAck) parts.push("it consumes with noAck: true");
  const errors = run.reports(R.channelError).map((e) => String(e.data));
  if (errors.length) parts.push(`the broker closed its channel: ${describeValue(errors[0], 220)}`);
  const nacks = run.reports(R.nack).map((e) => e.data as { messageId: unknown; requeue: boolean });
  const dropped = nacks.filter((x) => !x.requeue);
  if (dropped.length) parts.push(`it nacked/rejected ${describeValue(dropped[0]!.messageId)} without requeue (a dropped message)`);
  return parts.length ? ` In process ${run.n}, ${parts.join("; ")}.` : "";
}

/**
 * Waits until every id in `ids` is in the ledger and nothing is ready in the queue. The end of
 * the wait is judged from outside; on a timeout the failure says what is missing.
 */
async function waitSettled(t: T, s: Setup, run: Run, ids: string[], ms: number, when: string): Promise<void> {
  const started = Date.now();
  const until = started + ms;
  let ended: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  void run.worker.exited.then((x) => (ended = x));
  let progress = "";
  let quietSince = Date.now();
  for (;;) {
    const failed = run.reports(R.startFailed)[0];
    if (failed) t.fail(`startConsumer() failed: ${describeValue(failed.data, 400)}`);
    const rows = s.ledger.rows();
    const applied = new Set(rows.map((r) => r.message_id));
    const missing = ids.filter((id) => !applied.has(id));
    const q = await s.obs.count(s.queue);
    if (!q) t.fail(`${when}: ${GONE}`);
    const ready = q.messageCount;
    if (missing.length === 0 && ready === 0) return;
    const now = `${rows.length}/${ready}/${run.reports(R.delivered).length}/${run.reports(R.nack).length}`;
    if (now !== progress || ready > 0) quietSince = Date.now();
    progress = now;
    const gone = ended as { code: number | null; signal: NodeJS.Signals | null } | null;
    if (gone) {
      t.fail(`Your consumer's process ${run.n} ended (${gone.signal ?? `exit code ${gone.code}`}) ${when}, with ${missing.length} payment(s) still not applied.${whatItDid(run)}${tail(run.worker.log)}`);
    }
    // A channel the broker closed delivers nothing more: no need to wait.
    const channelDead = run.reports(R.channelError).length > 0;
    if (Date.now() > until || Date.now() - quietSince > QUIET_MS || channelDead) {
      const took = ((Date.now() - started) / 1000).toFixed(1);
      const h = new History();
      for (const id of ids) h.record("produced", id);
      for (const id of applied) h.record("applied", id);
      const lost = h.noLoss() ?? "every payment was applied";
      t.fail(
        `${when}, within ${took} s: ${lost}; ${ready} message(s) still wait in the queue.${whatItDid(run)}` +
          (missing.length ? " A payment that is not applied must stay in the queue (unacked, or nacked with requeue) until it is." : "") +
          tail(run.worker.log),
      );
    }
    await sleep(25);
  }
}

/**
 * Asks the process to stop cleanly: the learner's stop(), then (at the "stopped" checkpoint) an
 * optional look from outside, then the worker closes the channel (returning anything unacked to
 * the queue) and the connection.
 */
async function finish(t: T, run: Run, atStopped?: () => Promise<void>): Promise<void> {
  void run.worker.stop(15_000);
  await run.worker.waitFor((e) => e.type === "checkpoint" && e.name === "stopped", 8000, `your stop() to resolve (process ${run.n})`);
  const stopFailed = run.reports(R.stopFailed)[0];
  if (stopFailed) t.fail(`stop() threw: ${describeValue(stopFailed.data, 300)}`);
  if (atStopped) await atStopped();
  run.worker.resume();
  await run.worker.waitFor((e) => e.name === R.closed, 8000, `process ${run.n} to close its connection after stop()`);
}

/** Checks the ledger against what was published: each id exactly once, with its own payment. */
function verifyLedger(t: T, s: Setup, sent: Sent[], describeRun: (n: number) => string): void {
  const rows = s.ledger.rows();
  const expected = new Map(sent.map((m) => [m.id, m.payment]));
  const unknown = rows.find((r) => !expected.has(r.message_id));
  if (unknown) {
    t.fail(`applyPayment was called with message id ${describeValue(unknown.message_id)}, which is not the messageId of any message the grader published (they look like "${sent[0]!.id}"). Pass msg.properties.messageId.`);
  }
  for (const r of rows) {
    let got: unknown;
    try {
      got = JSON.parse(r.payment);
    } catch {
      got = r.payment;
    }
    if (!isDeepStrictEqual(got, expected.get(r.message_id))) {
      t.fail(`applyPayment("${r.message_id}", …) got the payment ${describeValue(got)}, but that message's body is ${JSON.stringify(expected.get(r.message_id))}. Pass JSON.parse of the body.`);
    }
  }
  const h = new History();
  for (const m of sent) h.record("produced", m.id);
  for (const r of rows) h.record("applied", r.message_id);
  if (h.noDuplicateEffect()) {
    const seen = new Map<string, LedgerRow>();
    for (const r of rows) {
      const first = seen.get(r.message_id);
      if (first) {
        const where = first.run === r.run ? `both times by ${describeRun(r.run)}` : `first by ${describeRun(first.run)}, then again by ${describeRun(r.run)}`;
        const outside = r.in_tx === 0 || first.in_tx === 0 ? " (applyPayment ran outside any transaction)" : "";
        t.fail(`Payment ${r.message_id} was applied twice, ${where}${outside}: the account was credited twice. Of ${sent.length} payments, the ledger holds ${rows.length} rows.`);
      }
      seen.set(r.message_id, r);
    }
  }
  const lost = h.noLoss();
  if (lost) t.fail(`Payment ${lost}: the broker had handed it over, and it is gone without its effect.`);
}

/** After the last process closed its channel, nothing may be back in the queue: everything was acked. */
async function verifyQueueEmpty(t: T, s: Setup): Promise<void> {
  const left = await s.obs.drainIds(s.queue);
  if (left === null) t.fail(`After your consumer stopped: ${GONE}`);
  if (left.length === 0) return;
  const applied = new Set(s.ledger.rows().map((r) => r.message_id));
  const done = left.filter((id) => applied.has(id));
  t.fail(
    `After your consumer stopped and its channel closed, ${left.length} message(s) came back to the queue (${left.slice(0, 3).join(", ")}${left.length > 3 ? ", …" : ""}): they were delivered and never acked.` +
      (done.length ? ` ${done[0]} was already applied: a message you skip as a duplicate must still be acked, or it is redelivered forever.` : ""),
  );
}

/** Waits until the broker has noticed a process is gone: its consumer removed, its unacked messages back in the queue. */
async function waitNoConsumer(t: T, s: Setup, what: string): Promise<void> {
  const until = Date.now() + 5000;
  for (;;) {
    const q = await s.obs.count(s.queue);
    if (!q) t.fail(`${what}: ${GONE}`);
    if (q.consumerCount === 0) return;
    if (Date.now() > until) t.fail(`${what}, the queue still has ${q.consumerCount} consumer(s) 5 s later.`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------- the crash scenario

const KILL_TEXT: Record<KillPoint, (nth: number) => string> = {
  "effect-start": (k) => `during applyPayment call #${k}, before it wrote anything`,
  "effect-written": (k) => `inside applyPayment call #${k}, right after its ledger row was written (before your code got control back)`,
  "before-ack": (k) => `in the ack that settles message #${k}, after its payment was handled and before the ack reached the broker`,
};

/**
 * Publishes 10 payments, runs the consumer until it is SIGKILLed at `point` on the nth call,
 * restarts it (a new process, started early and held at a gate until the first is dead), lets
 * it finish, and judges the ledger and the queue.
 */
async function crashAndRestart(t: T, point: KillPoint): Promise<void> {
  const nth = t.rng.int(2, 6);
  const crashText = KILL_TEXT[point](nth);
  const { s, runs } = await setup(t, [{ kill: { point, nth } }, {}]);
  const [first, second] = runs as [Run, Run];
  const sent = makePayments(t.rng, 10, "");
  await publish(s.gch, s.queue, sent);
  await release(first);
  const runName = (n: number) => (n === 1 ? "process 1 (the one killed)" : "process 2 (the restart)");

  // Process 1 must reach the crash point. If it handles everything without getting there, say so.
  const ids = sent.map((m) => m.id);
  const until = Date.now() + SETTLE_MS;
  let exit = await exitedWithin(first, 0);
  let idleSince = 0;
  while (!exit) {
    const failed = first.reports(R.startFailed)[0];
    if (failed) t.fail(`startConsumer() failed: ${describeValue(failed.data, 400)}`);
    const applied = new Set(s.ledger.rows().map((r) => r.message_id));
    const idle = ids.every((id) => applied.has(id)) && (await s.obs.count(s.queue))?.messageCount === 0;
    idleSince = idle ? idleSince || Date.now() : 0;
    if ((idleSince && Date.now() - idleSince > 1500) || Date.now() > until) {
      const acks = first.reports(R.ack);
      const lastAck = acks[acks.length - 1]?.data as { acked?: number } | undefined;
      const did = point === "before-ack" ? `acked only ${lastAck?.acked ?? 0} message(s)` : `made only ${first.reports(R.effectCall).length} applyPayment call(s)`;
      t.fail(
        `The grader meant to crash your consumer ${crashText}, but in ${Math.round((Date.now() - until + SETTLE_MS) / 1000)} s it ${did} for ${ids.length} payments.` +
          (point === "before-ack" ? " Each message must be acked (manual acks, noAck: false) once its payment is committed." : " Each new payment must go through applyPayment.") +
          whatItDid(first) +
          tail(first.worker.log),
      );
    }
    exit = await exitedWithin(first, 25);
  }
  if (exit.signal !== "SIGKILL") {
    const failed = first.reports(R.startFailed)[0];
    if (failed) t.fail(`startConsumer() failed: ${describeValue(failed.data, 400)}`);
    t.fail(`Your consumer's process ended (${exit.signal ?? `exit code ${exit.code}`}) before the crash point (${crashText}).${whatItDid(first)}${tail(first.worker.log)}`);
  }

  await waitNoConsumer(t, s, "After process 1 was killed");
  await release(second);
  await waitStarted(t, second);
  await waitSettled(t, s, second, ids, SETTLE_MS, `After the crash ${crashText} and a restart`);
  await finish(t, second);
  try {
    verifyLedger(t, s, sent, runName);
    await verifyQueueEmpty(t, s);
  } catch (e) {
    if (isCheckFailure(e)) t.fail(`The consumer was SIGKILLed ${crashText}, then restarted. ${(e as Error).message}`);
    throw e;
  }
}

// ---------------------------------------------------------------- checks

export default defineGrader<AtLeastOnceConsumerSubmission>({
  exports: { declareQueue: "function", startConsumer: "function" },
  checks: [
    {
      name: "declareQueue makes a durable queue that outlives its consumers",
      hint: "Look at assertQueue's options: durable keeps the queue across a broker restart; exclusive and autoDelete tie its life to a connection or a consumer.",
      timeoutMs: 15000,
      async run(t: T) {
        const queue = t.names.queue("payments");
        const gconn = await t.rabbit.connect();
        const obs = new Observer(gconn);
        const gch = await gconn.createConfirmChannel();
        gch.on("error", () => {});
        const lconn = await learnerDeclare(t, obs, queue);

        // Re-declaring with durable, non-exclusive, non-auto-delete settings succeeds only if they
        // match; the broker's 406 names the first one that differs (durable, then auto_delete).
        const probe = await obs.throwaway();
        try {
          await probe.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
          await probe.close().catch(() => {});
        } catch (e) {
          if (amqpCode(e) !== 406) throw e;
          const said = brokerText(e);
          const arg = /inequivalent arg '([^']+)'/.exec(said)?.[1];
          if (arg === "durable") {
            t.fail(`The queue is not durable (the broker says: ${said}). A broker restart deletes a non-durable queue, and every payment waiting in it, persistent or not.`);
          }
          if (arg === "auto_delete") {
            t.fail(`The queue is auto-delete (the broker says: ${said}). It is deleted when its last consumer goes away, so a consumer crash takes the waiting payments with it.`);
          }
          // Another argument (x-queue-type quorum, say) differs: durability is what matters here.
        }

        const one = makePayments(t.rng, 1, "d");
        await publish(gch, queue, one);
        const again = await lconn.createChannel();
        again.on("error", () => {});
        try {
          await t.within("declareQueue() (second call)", 5000, t.submission.declareQueue(again, queue));
        } catch (e) {
          if (isCheckFailure(e)) throw e;
          t.fail(`Calling declareQueue() a second time for the same queue threw: ${brokerText(e)}. Every consumer start declares the queue; it must be repeatable.`);
        }
        const after = await obs.count(queue);
        if (after?.messageCount !== 1) {
          t.fail(`The grader queued 1 payment, then called declareQueue() again; the queue then held ${after ? after.messageCount : "nothing (it is gone)"}. Declaring must not delete or purge the queue.`);
        }
        // The service that declared it goes away: the queue and its payment must stay.
        await lconn.close();
        let left: { messageCount: number } | null = null;
        try {
          left = await obs.count(queue);
        } catch (e) {
          if (amqpCode(e) !== 405) throw e;
        }
        if (left?.messageCount !== 1) {
          t.fail(`When the connection that called declareQueue() closed, the queue ${left ? `held ${left.messageCount} messages instead of 1` : "was deleted with it"}: it is exclusive to that connection. A payments queue must outlive every consumer.`);
        }
      },
    },
    {
      name: `at most ${MAX_PREFETCH} payments are in flight (delivered, not yet acked)`,
      hint: "The broker keeps sending to a consumer until the prefetch limit of unacked messages is reached, and with no limit (or noAck) it sends everything. Call ch.prefetch(n) before ch.consume().",
      timeoutMs: 20000,
      async run(t: T) {
        // The worker keeps every delivery from your callback: nothing is handled, nothing acked.
        const { s, runs } = await setup(t, [{ holdDeliveries: true }]);
        const run = runs[0]!;
        await release(run);
        await waitStarted(t, run);
        let consumers = 0;
        await t
          .waitFor(
            async () => {
              consumers = (await s.obs.count(s.queue))?.consumerCount ?? 0;
              return consumers > 0;
            },
            { timeoutMs: 2000, message: "" },
          )
          .catch((e: unknown) => {
            if (isCheckFailure(e)) t.fail(`startConsumer() resolved, but 2 s later the queue has no consumer: resolve once ch.consume() has resolved, and consume the queue you are given.`);
            throw e;
          });
        const total = 60;
        await publish(s.gch, s.queue, makePayments(t.rng, total, "p"));
        // A classic queue hands a message to a consumer with room as it arrives, so once the
        // publishes are confirmed the broker has sent all it will. Wait until the worker has
        // seen them too, and the count holds still.
        let inFlight = 0;
        let last = -1;
        let delivered = 0;
        try {
          await t.waitFor(
            async () => {
              inFlight = total - ((await s.obs.count(s.queue))?.messageCount ?? total);
              delivered = run.reports(R.delivered).length;
              const steady = inFlight === last && delivered === inFlight && inFlight > 0;
              last = inFlight;
              return steady;
            },
            { timeoutMs: 5000, message: "", intervalMs: 50 },
          );
        } catch (e) {
          if (!isCheckFailure(e)) throw e;
          if (inFlight === 0) t.fail(`With ${total} payments queued and your consumer registered, none was delivered to it within 5 s.${whatItDid(run)}`);
          if (delivered < inFlight) {
            t.fail(`${inFlight} payments left the queue but only ${delivered} reached the channel you were given: consume on deps.channel.${whatItDid(run)}`);
          }
          t.fail(`With ${total} payments queued and none of them acked, the number in flight never settled within 5 s (last seen: ${inFlight}).${whatItDid(run)}`);
        }
        if (inFlight > MAX_PREFETCH) {
          const opts = run.reports(R.consumeOptions)[0]?.data as { noAck?: boolean } | undefined;
          t.fail(
            `While your consumer had not acked a single payment, ${inFlight} of ${total} left the queue for it (at most ${MAX_PREFETCH} may be in flight). ` +
              (opts?.noAck
                ? "It consumes with noAck: true: the broker forgets each message as it sends it, so a crash loses everything buffered, and prefetch does not apply."
                : "Without a prefetch limit (or with one set after consume) the broker pushes the whole backlog into one process: a crash there puts it all back, and no other consumer can help."),
          );
        }
      },
    },
    {
      name: "a clean run applies every payment once, acks it, and stop() cancels the consumer",
      hint: "Identify a message by its messageId property, not by its body: two payments can carry the same body. stop() cancels the consumer by its consumerTag.",
      timeoutMs: 25000,
      async run(t: T) {
        const { s, runs } = await setup(t, [{}]);
        const run = runs[0]!;
        const sent = makePayments(t.rng, 15, "c");
        // Three payments repeat another's body exactly: same account, same amount, new message id.
        t.rng.shuffle([0, 1, 2, 3, 4, 5]).slice(0, 3).forEach((from, k) => (sent[12 + k]!.payment = { ...sent[from]!.payment }));
        const order = t.rng.shuffle(sent);
        await publish(s.gch, s.queue, order);
        await release(run);
        await waitStarted(t, run);
        await waitSettled(t, s, run, sent.map((m) => m.id), SETTLE_MS, `With ${sent.length} payments queued (3 of them with the same body as another)`);
        let consumersAfterStop = -1;
        await finish(t, run, async () => {
          consumersAfterStop = (await s.obs.count(s.queue))?.consumerCount ?? 0;
        });
        verifyLedger(t, s, sent, () => "your consumer");
        await verifyQueueEmpty(t, s);
        if (consumersAfterStop !== 0) {
          t.fail(`After stop() resolved (with the connection still open), the queue still had ${consumersAfterStop} consumer(s): the broker would keep delivering to a service that is shutting down.`);
        }
      },
    },
    {
      name: "a payment published twice with the same message id is applied once, even across a restart",
      hint: "A producer that retries after a lost confirm publishes the same message again. Keep the processed message ids in the database, not in memory, and check them for every message, not only redelivered ones.",
      timeoutMs: 30000,
      async run(t: T) {
        const { s, runs } = await setup(t, [{}, {}]);
        const [run1, run2] = runs as [Run, Run];
        const first = makePayments(t.rng, 8, "a");
        const dupNow = t.rng.shuffle(first).slice(0, 2);
        // The copies follow their originals at random places in the stream.
        const batch1 = [...first];
        for (const d of dupNow) batch1.splice(t.rng.int(batch1.indexOf(d) + 1, batch1.length), 0, d);
        await publish(s.gch, s.queue, batch1);
        await release(run1);
        await waitStarted(t, run1);
        await waitSettled(t, s, run1, first.map((m) => m.id), SETTLE_MS, `With ${first.length} payments queued, 2 of them published twice`);
        await finish(t, run1);

        // The service restarts; meanwhile the producer retried three old payments and sent new ones.
        const later = makePayments(t.rng, 3, "b");
        const dupLater = t.rng.shuffle(first.filter((m) => !dupNow.includes(m))).slice(0, 3);
        await publish(s.gch, s.queue, t.rng.shuffle([...later, ...dupLater]));
        await waitNoConsumer(t, s, "After process 1 stopped");
        await release(run2);
        await waitStarted(t, run2);
        const all = [...first, ...later];
        await waitSettled(t, s, run2, all.map((m) => m.id), SETTLE_MS, "After a restart, with 3 new payments and 3 old ones published again");
        await finish(t, run2);
        try {
          verifyLedger(t, s, all, (n) => (n === 1 ? "process 1" : "process 2 (after a clean restart)"));
          await verifyQueueEmpty(t, s);
        } catch (e) {
          if (isCheckFailure(e)) {
            t.fail(`The grader published ${dupNow.map((m) => m.id).join(" and ")} twice to process 1, and ${dupLater.map((m) => m.id).join(", ")} again after a restart. ${(e as Error).message}`);
          }
          throw e;
        }
      },
    },
    {
      name: "a crash before a payment is applied loses nothing",
      hint: "Ack only after the work is committed. Whatever the broker has been told is done is gone for good if the process dies before doing it; and a dedup record committed before the effect says 'done' too early.",
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
      name: "a crash after a payment commits, before its ack, does not apply it twice",
      hint: "The broker redelivers what was never acked, so a restarted consumer sees that payment again. It must find the message id already recorded in the database, skip the effect, and ack.",
      timeoutMs: 40000,
      async run(t: T) {
        await crashAndRestart(t, "before-ack");
      },
    },
    {
      name: "a payment whose transaction fails is tried again, never acked or dropped",
      hint: "Ack only after db.transaction(...)() has returned: the COMMIT itself can fail, after your function ran. When the transaction throws, nothing was committed: nack with requeue so the broker delivers the message again.",
      timeoutMs: 25000,
      async run(t: T) {
        const sent = makePayments(t.rng, 8, "f");
        const [throws, breaks] = t.rng.shuffle(sent.slice(1)).map((m) => m.id) as [string, string];
        const { s, runs } = await setup(t, [{ failFirstAttempt: [throws], failCommitOnce: [breaks] }]);
        const run = runs[0]!;
        await publish(s.gch, s.queue, sent);
        await release(run);
        await waitStarted(t, run);
        await waitSettled(
          t,
          s,
          run,
          sent.map((m) => m.id),
          SETTLE_MS,
          `applyPayment threw once for ${throws} (the ledger was briefly unavailable), and the COMMIT of the transaction for ${breaks} failed once (a deferred constraint); then`,
        );
        await finish(t, run);
        verifyLedger(t, s, sent, () => "your consumer");
        await verifyQueueEmpty(t, s);
      },
    },
  ],
});
