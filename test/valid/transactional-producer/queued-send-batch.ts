// Valid: publish() calls are queued one behind the other on a promise chain, each message goes out with transaction.sendBatch({ topicMessages }) rather than send(), and the Java-compatible partitioner is named explicitly
import { Partitioners, type Kafka } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  const producer = kafka.producer({
    transactionalId,
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  let queue: Promise<unknown> = Promise.resolve();

  async function writeBatch(messages: OutgoingMessage[], hooks: PublishHooks): Promise<void> {
    const transaction = await producer.transaction();
    let failed = true;
    try {
      for (let i = 0; i < messages.length; i++) {
        const message = messages[i]!;
        await hooks.beforeSend?.(message, i);
        await transaction.sendBatch({ topicMessages: [{ topic: message.topic, messages: [{ key: message.key, value: message.value }] }] });
      }
      await transaction.commit();
      failed = false;
    } finally {
      if (failed && transaction.isActive()) await transaction.abort().catch(() => undefined);
    }
  }

  return {
    publish(messages, hooks = {}) {
      const run = queue.then(() => writeBatch(messages, hooks));
      queue = run.catch(() => undefined);
      return run;
    },
    async close() {
      await queue;
      await producer.disconnect();
    },
  };
}
