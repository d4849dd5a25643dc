// Valid: prefetch 1 on the whole channel (global), a different dedup schema checked with SELECT before INSERT in an IMMEDIATE transaction, and reject(requeue) instead of nack for a failed payment
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-queue-mode": "lazy" } });
}

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { channel, queue, db, applyPayment } = deps;
  db.exec(`
    CREATE TABLE IF NOT EXISTS inbox (
      seq         INTEGER PRIMARY KEY,
      message_id  TEXT NOT NULL UNIQUE,
      account     TEXT NOT NULL,
      received_ms INTEGER NOT NULL
    )`);
  const lookup = db.prepare("SELECT seq FROM inbox WHERE message_id = ?");
  const insert = db.prepare("INSERT INTO inbox (message_id, account, received_ms) VALUES (?, ?, ?)");
  const process = db.transaction((messageId: string, payment: Payment): "applied" | "duplicate" => {
    if (lookup.get(messageId) !== undefined) return "duplicate";
    insert.run(messageId, payment.account, Date.now());
    applyPayment(messageId, payment);
    return "applied";
  });

  await channel.prefetch(1, true);
  const handler = (msg: ConsumeMessage | null) => {
    if (!msg) return;
    const messageId = msg.properties.messageId;
    let payment: Payment;
    try {
      payment = JSON.parse(msg.content.toString("utf8"));
    } catch {
      channel.reject(msg, false);
      return;
    }
    try {
      process.immediate(String(messageId), payment);
    } catch {
      channel.reject(msg, true);
      return;
    }
    channel.ack(msg);
  };
  const ok = await channel.consume(queue, handler);
  return { stop: async () => void (await channel.cancel(ok.consumerTag)) };
}
