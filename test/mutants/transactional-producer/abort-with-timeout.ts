// Mutant: races transaction.abort() against a 300 ms timer before rethrowing, so publish() rejects while the abort is still on its way
// @targets after an aborted batch, the same publisher publishes the next batch right away, and only that one becomes visible
import type { Kafka } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

/**
 * A publisher that writes each batch as one Kafka transaction: every message of the batch
 * becomes visible to `read_committed` readers at the same moment, or none ever does.
 */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  // The transactional id is the producer's identity across restarts: reusing it is what lets
  // the broker fence an older instance (a zombie) still running somewhere. Never randomise it.
  // kafkajs makes transactional sends idempotent (producer id, epoch, sequence numbers) and
  // requires acks = all for them; one request in flight keeps the sequence numbers in order.
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();

  return {
    async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}): Promise<void> {
      // The first transaction() registers the transactional id with the coordinator and gets
      // an epoch; that bumps the epoch and fences any older producer with the same id.
      const transaction = await producer.transaction();
      try {
        for (const [index, message] of messages.entries()) {
          await hooks.beforeSend?.(message, index);
          await transaction.send({
            topic: message.topic,
            messages: [{ key: message.key, value: message.value }],
          });
        }
      } catch (error) {
        // Some messages may already be on the broker: the abort marker is what hides them
        // from read_committed readers. Never commit after an error.
        try {
          await Promise.race([transaction.abort(), sleep(300)]);
        } catch {
          // A fenced producer cannot abort either (the broker already aborted its transaction
          // when the new producer took over); the original error is the one to report.
        }
        throw error;
      }
      await transaction.commit();
    },

    async close(): Promise<void> {
      await producer.disconnect();
    },
  };
}
