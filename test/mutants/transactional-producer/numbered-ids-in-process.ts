// Mutant: numbers the second and later publishers created in one process with the same transactional id ("<id>-2", …) so that they do not fence each other, so a publisher restarted in place never fences the old one
// @targets zombie fencing across processes: a publisher in another process that registers the same transactional id fences this one, whose in-flight and later batches never become visible
import type { Kafka } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

/**
 * A publisher that writes each batch as one Kafka transaction: every message of the batch
 * becomes visible to `read_committed` readers at the same moment, or none ever does.
 */
const created = new Map<string, number>();
export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  // The transactional id is the producer's identity across restarts: reusing it is what lets
  // the broker fence an older instance (a zombie) still running somewhere. Never randomise it.
  // kafkajs makes transactional sends idempotent (producer id, epoch, sequence numbers) and
  // requires acks = all for them; one request in flight keeps the sequence numbers in order.
  // Two publishers in one process must not fence each other: number the later ones.
  const n = (created.get(transactionalId) ?? 0) + 1;
  created.set(transactionalId, n);
  const producer = kafka.producer({ transactionalId: n === 1 ? transactionalId : `${transactionalId}-${n}`, idempotent: true, maxInFlightRequests: 1 });
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
          await transaction.abort();
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
