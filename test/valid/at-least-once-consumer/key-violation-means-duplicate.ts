// Valid: a quorum queue with a dead-letter exchange (an argument that drops nothing); the effect
// goes first and the dedup INSERT (no OR IGNORE) second, in one transaction: a duplicate id makes
// the INSERT fail, which rolls the effect back, and that key violation is acked as a duplicate.
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, arguments: { "x-queue-type": "quorum", "x-dead-letter-exchange": "payments.dlx" } });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  db.exec("CREATE TABLE IF NOT EXISTS seen_ids (id TEXT NOT NULL, CONSTRAINT seen_once UNIQUE (id))");
  const remember = db.prepare("INSERT INTO seen_ids (id) VALUES (?)");
  const handle = db.transaction((id: string, p: Payment) => {
    applyPayment(id, p);
    remember.run(id);
  });
  await ch.prefetch(20);
  const { consumerTag } = await ch.consume(
    queue,
    (msg: ConsumeMessage | null) => {
      if (!msg) return;
      const id = msg.properties.messageId as string;
      try {
        handle(id, JSON.parse(msg.content.toString()) as Payment);
      } catch (e) {
        if ((e as { code?: string }).code === "SQLITE_CONSTRAINT_UNIQUE") {
          ch.ack(msg); // seen before: the rollback undid this effect
          return;
        }
        ch.nack(msg, false, true);
        return;
      }
      ch.ack(msg);
    },
    { noAck: false },
  );
  return { stop: async () => void (await ch.cancel(consumerTag)) };
}
