// Mutant: message ids are trimmed and lower-cased before the dedup lookup, so look-alike ids of different payments collide
// @targets a clean run applies every payment once, acks it, and stop() cancels the consumer
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

/** At most this many payments are delivered and not yet acked at any moment. */
const PREFETCH = 10;

/** A durable queue outlives a broker restart; not exclusive and not auto-delete, it outlives its consumers. */
export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  // The dedup record lives in the same database as the effect, so both commit together.
  db.exec(`CREATE TABLE IF NOT EXISTS processed_messages (
    message_id   TEXT PRIMARY KEY,
    processed_at TEXT NOT NULL
  )`);
  const markProcessed = db.prepare("INSERT OR IGNORE INTO processed_messages (message_id, processed_at) VALUES (?, ?)");

  // One transaction: either the id is recorded AND the payment is in the ledger, or neither.
  // Returns false for an id processed before (a redelivery or a duplicate publish).
  const applyOnce = db.transaction((messageId: string, payment: Payment): boolean => {
    if (markProcessed.run(messageId.trim().toLowerCase(), new Date().toISOString()).changes === 0) return false;
    applyPayment(messageId, payment);
    return true;
  });

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
