// The grader's worker: runs the learner's consumer in a process the grader can kill and restart.
// It opens everything the learner gets (a channel, the database), injects the effect, and wraps
// the channel so it can crash at an exact point: inside applyPayment, or inside ack before the
// ack reaches amqplib. Verdicts are not made here; the grader reads the ledger and the queue.
import { readSync } from "node:fs";
import amqp from "amqplib";
import type { Channel, ChannelModel, ConsumeMessage, Options, Replies } from "amqplib";
import Database from "better-sqlite3";
import { runWorker } from "../../../src/kit/worker.ts";
import type { AtLeastOnceConsumerSubmission, Payment, RunningConsumer } from "../../../src/contracts/at-least-once-consumer.ts";
import { R, type WorkerInput } from "./protocol.ts";

type Consume = (queue: string, onMessage: (msg: ConsumeMessage | null) => void, options?: Options.Consume) => Promise<Replies.Consume>;

function text(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function idOf(msg: unknown): unknown {
  return (msg as ConsumeMessage | null)?.properties?.messageId;
}

/**
 * Pushes out, synchronously, every frame amqplib has queued but not yet written (it writes on
 * setImmediate), in one write, after reading away what the broker sent us so that closing the
 * socket sends FIN rather than RST (an RST can make the broker drop bytes it has not read yet).
 * Best effort: it models "the crash came a moment later, after those frames left".
 */
function flushAmqp(model: ChannelModel): void {
  type Internals = { channels?: ({ buffer?: { read(): unknown } } | null)[]; stream?: { write(b: Buffer): boolean; _handle?: { fd?: number } } };
  const c = (model as unknown as { connection?: Internals }).connection;
  if (!c?.channels || !c.stream) return;
  const chunks: Buffer[] = [];
  for (const entry of c.channels) {
    if (!entry?.buffer) continue;
    for (let chunk = entry.buffer.read(); chunk !== null; chunk = entry.buffer.read()) {
      if (Buffer.isBuffer(chunk)) chunks.push(chunk);
    }
  }
  const fd = c.stream._handle?.fd;
  if (typeof fd === "number" && fd >= 0) {
    const sink = Buffer.alloc(64 * 1024);
    try {
      // The socket is non-blocking (libuv): this stops at EAGAIN.
      while (readSync(fd, sink) > 0);
    } catch {
      // EAGAIN: nothing more to read.
    }
  }
  if (chunks.length) c.stream.write(Buffer.concat(chunks));
}

await runWorker<AtLeastOnceConsumerSubmission, WorkerInput>(async (w) => {
  const input = w.input;
  if (input.gate) await w.checkpoint("gate");

  const conn = await amqp.connect(input.amqpUrl);
  conn.on("error", (e: unknown) => w.report(R.channelError, `connection: ${text(e)}`));
  const raw = await conn.createChannel();
  raw.on("error", (e: unknown) => w.report(R.channelError, text(e)));

  const db = new Database(input.dbPath);
  db.pragma("busy_timeout = 5000");
  db.pragma("journal_mode = WAL");
  // The ledger's commit_check is a deferred foreign key: how the grader makes a COMMIT fail.
  db.pragma("foreign_keys = ON");

  const crash = (): never => {
    try {
      flushAmqp(conn);
    } finally {
      process.kill(process.pid, "SIGKILL");
    }
    throw new Error("unreachable: the process was killed");
  };

  // ------------------------------------------------------------ the effect
  const insert = db.prepare("INSERT INTO ledger (message_id, payment, run, in_tx, commit_check) VALUES (?, ?, ?, ?, ?)");
  const failFirst = new Set(input.failFirstAttempt);
  const failCommit = new Set(input.failCommitOnce);
  let effectCalls = 0;
  const applyPayment = (messageId: string, payment: Payment): void => {
    const n = ++effectCalls;
    w.report(R.effectCall, { n, messageId });
    if (input.kill?.point === "effect-start" && input.kill.nth === n) crash();
    if (failFirst.delete(String(messageId))) {
      w.report(R.effectFailed, messageId);
      throw new Error(`the ledger is temporarily unavailable (the grader made this call for ${String(messageId)} fail; nothing was written)`);
    }
    // 0 matches no row of ledger_commit_check: checked at COMMIT (deferred), so the commit fails.
    const breakCommit = failCommit.delete(String(messageId));
    if (breakCommit) w.report(R.commitBroken, messageId);
    insert.run(String(messageId), JSON.stringify(payment) ?? "undefined", input.run, db.inTransaction ? 1 : 0, breakCommit ? 0 : null);
    if (input.kill?.point === "effect-written" && input.kill.nth === n) crash();
  };

  // ------------------------------------------------------------ the channel the learner gets
  // Deliveries handed to the learner and not yet acked or nacked, by delivery tag. An ack
  // counts the deliveries it settles (one, or several with allUpTo / ackAll), so the crash lands
  // on the ack that would settle the nth message however the learner batches its acks.
  const outstanding = new Map<number, unknown>();
  const settle = (msg: ConsumeMessage | null, allUpTo: boolean): number => {
    const tag = msg?.fields?.deliveryTag;
    let n = 0;
    for (const t of [...outstanding.keys()]) {
      if (tag === undefined ? allUpTo : allUpTo ? t <= tag : t === tag) {
        outstanding.delete(t);
        n++;
      }
    }
    return n;
  };
  let acked = 0;
  const beforeAck = (msg: ConsumeMessage | null, allUpTo: boolean): void => {
    acked += settle(msg, allUpTo);
    w.report(R.ack, { acked, messageId: msg ? idOf(msg) : "(ackAll)", allUpTo });
    if (input.kill?.point === "before-ack" && acked >= input.kill.nth) crash();
  };
  const held: ConsumeMessage[] = [];
  const consume: Consume = (queue, onMessage, options) => {
    w.report(R.consumeOptions, { noAck: options?.noAck === true });
    return raw.consume(
      queue,
      (msg) => {
        if (msg) w.report(R.delivered, { messageId: idOf(msg), redelivered: msg.fields.redelivered });
        if (msg && input.holdDeliveries) {
          held.push(msg); // never handed over: nothing is handled, nothing acked
          return;
        }
        if (msg) outstanding.set(msg.fields.deliveryTag, idOf(msg));
        onMessage(msg);
      },
      options,
    );
  };
  const overrides: Partial<Record<keyof Channel, unknown>> = {
    consume,
    ack: (msg: ConsumeMessage, allUpTo?: boolean) => {
      beforeAck(msg, allUpTo === true);
      raw.ack(msg, allUpTo);
    },
    ackAll: () => {
      beforeAck(null, true);
      raw.ackAll();
    },
    nack: (msg: ConsumeMessage, allUpTo?: boolean, requeue?: boolean) => {
      settle(msg, allUpTo === true);
      w.report(R.nack, { messageId: idOf(msg), requeue: requeue !== false });
      raw.nack(msg, allUpTo, requeue);
    },
    nackAll: (requeue?: boolean) => {
      settle(null, true);
      w.report(R.nack, { messageId: "(nackAll)", requeue: requeue !== false });
      raw.nackAll(requeue);
    },
    reject: (msg: ConsumeMessage, requeue?: boolean) => {
      settle(msg, false);
      w.report(R.nack, { messageId: idOf(msg), requeue: requeue !== false });
      raw.reject(msg, requeue);
    },
  };
  const channel = new Proxy(raw, {
    get(target, prop) {
      if (typeof prop === "string" && prop in overrides) return overrides[prop as keyof Channel];
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });

  // ------------------------------------------------------------ run
  let consumer: RunningConsumer;
  try {
    consumer = await w.submission.startConsumer({ channel, queue: input.queue, db, applyPayment });
    if (!consumer || typeof consumer.stop !== "function") throw new Error(`startConsumer() resolved to ${String(consumer)}, not an object with a stop() method`);
  } catch (e) {
    w.report(R.startFailed, text(e));
    await conn.close().catch(() => {});
    db.close();
    return;
  }
  w.report(R.started);

  await w.stopped;
  try {
    await consumer.stop();
  } catch (e) {
    w.report(R.stopFailed, text(e));
  }
  await w.checkpoint("stopped");
  // Closing the channel returns whatever is still unacked to the queue, which is how the
  // grader sees from outside that something was never acked.
  await raw.close().catch(() => {});
  await conn.close().catch(() => {});
  db.close();
  w.report(R.closed);
});
