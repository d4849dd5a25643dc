import type { Kafka } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

/**
 * Builds a publisher that writes each batch as ONE Kafka transaction: all of it becomes
 * visible to read_committed readers, or none of it ever does.
 */
export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  // TODO: this is a plain producer. Make it transactional, using exactly `transactionalId`
  // (it is this publisher's identity in every process: the broker fences older producers that
  // share it, so add nothing to it), and idempotent.
  const producer = kafka.producer();
  await producer.connect();

  return {
    async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}): Promise<void> {
      // TODO: one transaction for the whole batch, however large.
      //  - for each message, in order: await hooks.beforeSend?.(message, index), then send it
      //    (with its key, so the default partitioner picks its partition) through the
      //    transaction and await the send;
      //  - when everything is sent, commit (and await it);
      //  - if anything throws on the way, abort (and await it), then rethrow.
      void messages;
      void hooks;
      throw new Error("TODO: publish the batch inside one Kafka transaction");
    },

    async close(): Promise<void> {
      await producer.disconnect();
    },
  };
}
