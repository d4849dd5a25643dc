// Valid: an async handler that queues deliveries and works through them one at a time, acking in batches with allUpTo (every 3 payments, or when it runs dry), prefetch 5
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

const PREFETCH = 5;
const ACK_EVERY = 3;

export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  db.exec("CREATE TABLE IF NOT EXISTS seen_ids (id TEXT NOT NULL PRIMARY KEY) WITHOUT ROWID");
  const has = db.prepare("SELECT 1 FROM seen_ids WHERE id = ?");
  const add = db.prepare("INSERT INTO seen_ids (id) VALUES (?)");
  const handle = db.transaction((id: string, payment: Payment) => {
    if (has.get(id)) return;
    add.run(id);
    applyPayment(id, payment);
  });

  const backlog: ConsumeMessage[] = [];
  // The last delivery handled and committed but not yet acked: acking it with allUpTo settles it
  // and every earlier one, all of which are handled (in order) by then.
  let unacked: ConsumeMessage | null = null;
  let sinceAck = 0;
  let working: Promise<void> | null = null;

  const flushAcks = () => {
    if (unacked) ch.ack(unacked, true);
    unacked = null;
    sinceAck = 0;
  };

  const work = async () => {
    while (backlog.length) {
      await new Promise((r) => setImmediate(r)); // let other I/O in between payments
      const msg = backlog.shift()!;
      const id = msg.properties.messageId as string | undefined;
      let payment: Payment;
      try {
        payment = JSON.parse(msg.content.toString());
      } catch {
        flushAcks();
        ch.reject(msg, false);
        continue;
      }
      if (!id) {
        flushAcks();
        ch.reject(msg, false);
        continue;
      }
      try {
        handle(id, payment);
      } catch {
        // Earlier payments are committed: ack them first, then put this one back.
        flushAcks();
        ch.nack(msg, false, true);
        continue;
      }
      unacked = msg;
      if (++sinceAck >= ACK_EVERY) flushAcks();
    }
    flushAcks();
  };

  const kick = () => {
    working ??= work().finally(() => {
      working = null;
      if (backlog.length) kick();
    });
  };

  await ch.prefetch(PREFETCH);
  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      backlog.push(msg);
      kick();
    },
    { noAck: false },
  );
  return {
    async stop() {
      await ch.cancel(consumerTag);
      while (working) await working;
    },
  };
}
