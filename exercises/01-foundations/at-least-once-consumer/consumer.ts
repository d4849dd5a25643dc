import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, RunningConsumer } from "msglab/contracts/at-least-once-consumer";

/**
 * Declares the payments queue so that it survives a broker restart and outlives every
 * consumer, including one that crashed. Calling it again must keep the messages in it.
 */
export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  // TODO: assertQueue with the options that make the queue durable (not exclusive, not auto-delete).
  throw new Error("TODO: declareQueue");
}

/**
 * Consumes deps.queue on deps.channel and applies each payment exactly once, even when the
 * process is killed at any point and restarted, and even when a message arrives twice.
 */
export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  // TODO: create your table of processed message ids in db (CREATE TABLE IF NOT EXISTS ...).
  //       Keep every id in it: a duplicate can arrive long after the original. Keep it in db
  //       itself: no other database or file.

  // TODO: one db.transaction that records msg.properties.messageId and calls applyPayment,
  //       and does nothing when that id is already recorded.

  // TODO: a prefetch limit (1..20) BEFORE consuming.

  const onMessage = (msg: ConsumeMessage | null): void => {
    if (msg === null) return; // the broker cancelled the consumer
    // TODO: parse the body, run the transaction, and only then ack this message.
    //       If the transaction throws, nack with requeue instead (every time it fails).
  };

  // TODO: consume with manual acks (noAck: false) and keep the consumerTag for stop().
  throw new Error("TODO: startConsumer");
}
