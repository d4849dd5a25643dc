// Attack: two commits (wrong): the payment through deps.db, the record of its id through a second connection of its own to the same file (a different handle, so outside deps.db's transaction).
// @expect fail|error
// @only 8
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";
import Database from "better-sqlite3";

/** At most this many payments are delivered and not yet acked at any moment. */
const PREFETCH = 10;

/** A durable queue outlives a broker restart; not exclusive and not auto-delete, it outlives its consumers. */
export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  const mine = new Database(db.name);
  mine.pragma("busy_timeout = 5000");
  mine.exec("CREATE TABLE IF NOT EXISTS processed (message_id TEXT PRIMARY KEY)");
  const isProcessed = mine.prepare("SELECT 1 FROM processed WHERE message_id = ?");
  const markProcessed = mine.prepare("INSERT OR IGNORE INTO processed (message_id) VALUES (?)");
  const applyEffect = db.transaction((messageId: string, payment: Payment) => applyPayment(messageId, payment));
  const applyOnce = (messageId: string, payment: Payment): boolean => {
    if (isProcessed.get(messageId)) return false;
    applyEffect(messageId, payment);
    markProcessed.run(messageId);
    return true;
  };

  // Before consume: basic.qos applies to consumers created after it.
  await ch.prefetch(PREFETCH);

  const onMessage = (msg: ConsumeMessage | null): void => {
    if (msg === null) return; // the broker cancelled the consumer
    const messageId: unknown = msg.properties.messageId;
    let payment: Payment;
    try {
      payment = JSON.parse(msg.content.toString("utf8")) as Payment;
    } catch {
      ch.reject(msg, false); // unparseable: retrying cannot help
      return;
    }
    if (typeof messageId !== "string" || messageId === "") {
      ch.reject(msg, false); // no id, no way to deduplicate
      return;
    }
    try {
      applyOnce(messageId, payment);
    } catch {
      // Rolled back: nothing of it was committed. Put it back to be tried again.
      ch.nack(msg, false, true);
      return;
    }
    // Only now, with the effect and its dedup record committed, may the broker forget it.
    ch.ack(msg);
  };

  const { consumerTag } = await ch.consume(queue, onMessage, { noAck: false });
  return {
    async stop() {
      // Handling is synchronous, so once the cancel is confirmed every delivery received has
      // been acked or nacked.
      await ch.cancel(consumerTag);
    },
  };
}
