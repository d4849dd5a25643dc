// Attack: two commits (wrong): the payment now, the record of its id (and the ack) a few ms later from a timer, so no write of the learner's follows the commit synchronously.
// @expect fail|error
// @only 8
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

/** At most this many payments are delivered and not yet acked at any moment. */
const PREFETCH = 10;

/** A durable queue outlives a broker restart; not exclusive and not auto-delete, it outlives its consumers. */
export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  db.exec("CREATE TABLE IF NOT EXISTS processed (message_id TEXT PRIMARY KEY)");
  const isProcessed = db.prepare("SELECT 1 FROM processed WHERE message_id = ?");
  const markProcessed = db.prepare("INSERT OR IGNORE INTO processed (message_id) VALUES (?)");
  const applyEffect = db.transaction((messageId: string, payment: Payment) => applyPayment(messageId, payment));
  let chain = Promise.resolve();
  const pending = new Set<string>();

  await ch.prefetch(PREFETCH);
  const onMessage = (msg: ConsumeMessage | null): void => {
    if (msg === null) return;
    const messageId = msg.properties.messageId as string;
    const payment = JSON.parse(msg.content.toString("utf8")) as Payment;
    chain = chain.then(async () => {
      if (isProcessed.get(messageId) || pending.has(messageId)) {
        ch.ack(msg);
        return;
      }
      try {
        applyEffect(messageId, payment);
      } catch {
        ch.nack(msg, false, true);
        return;
      }
      pending.add(messageId);
      // The record follows later, from a timer: no write right after the commit.
      await new Promise((r) => setTimeout(r, 15));
      markProcessed.run(messageId);
      pending.delete(messageId);
      ch.ack(msg);
    });
  };
  const { consumerTag } = await ch.consume(queue, onMessage, { noAck: false });
  return {
    async stop() {
      await ch.cancel(consumerTag);
      await chain;
    },
  };
}
