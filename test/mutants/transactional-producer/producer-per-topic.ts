// Mutant: one transactional producer per topic, each with its own transaction: every topic's part is atomic, the batch across topics is not (a crash between the commits leaves one topic written)
// @targets each batch is one transaction of one idempotent producer: every record carries its producer id and the transactional flag, and no commit falls inside a batch
import type { Kafka, Producer, Transaction } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  const producers = new Map<string, Producer>();
  const producerFor = async (topic: string): Promise<Producer> => {
    let producer = producers.get(topic);
    if (!producer) {
      producer = kafka.producer({ transactionalId: `${transactionalId}.${topic}`, idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      producers.set(topic, producer);
    }
    return producer;
  };

  return {
    async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}): Promise<void> {
      const transactions = new Map<string, Transaction>();
      try {
        for (const [index, message] of messages.entries()) {
          await hooks.beforeSend?.(message, index);
          let transaction = transactions.get(message.topic);
          if (!transaction) {
            transaction = await (await producerFor(message.topic)).transaction();
            transactions.set(message.topic, transaction);
          }
          await transaction.send({ topic: message.topic, messages: [{ key: message.key, value: message.value }] });
        }
      } catch (error) {
        for (const transaction of transactions.values()) await transaction.abort().catch(() => {});
        throw error;
      }
      for (const transaction of transactions.values()) await transaction.commit();
    },

    async close(): Promise<void> {
      for (const producer of producers.values()) await producer.disconnect();
    },
  };
}
