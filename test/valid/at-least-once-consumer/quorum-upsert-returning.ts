// Valid: a quorum queue, prefetch 20 (the limit), and the dedup row claimed with INSERT … ON CONFLICT DO NOTHING RETURNING inside the transaction
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, arguments: { "x-queue-type": "quorum" } });
}

export async function startConsumer({ channel, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  db.exec("CREATE TABLE IF NOT EXISTS dedup (msg_id TEXT PRIMARY KEY, at INTEGER NOT NULL DEFAULT (unixepoch()))");
  const claim = db.prepare("INSERT INTO dedup (msg_id) VALUES (?) ON CONFLICT (msg_id) DO NOTHING RETURNING msg_id");
  const once = db.transaction((id: string, p: Payment) => {
    if (claim.get(id) === undefined) return; // seen before
    applyPayment(id, p);
  });
  await channel.prefetch(20);
  const { consumerTag } = await channel.consume(queue, (msg: ConsumeMessage | null) => {
    if (msg === null) return;
    try {
      once(msg.properties.messageId, JSON.parse(msg.content.toString()));
      channel.ack(msg);
    } catch {
      channel.nack(msg, false, true);
    }
  });
  return {
    stop: () => channel.cancel(consumerTag).then(() => undefined),
  };
}
