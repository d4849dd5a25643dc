// Valid: a class whose publish() ends every transaction in a finally (commit on the success path, abort otherwise, guarded by isActive()); a fenced producer is disconnected at once and the fencing error kept, so later publish() calls reject with it
import type { Kafka, Producer, Transaction } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

class Publisher implements TransactionalPublisher {
  private fenced: unknown = null;

  constructor(private readonly producer: Producer) {}

  async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}): Promise<void> {
    if (this.fenced) throw this.fenced;
    let tx: Transaction | null = null;
    let ok = false;
    try {
      tx = await this.producer.transaction();
      for (let index = 0; index < messages.length; index++) {
        const message = messages[index]!;
        await hooks.beforeSend?.(message, index);
        await tx.send({ topic: message.topic, messages: [{ key: message.key, value: message.value }] });
      }
      await tx.commit();
      ok = true;
    } catch (error) {
      const type = (error as { type?: string }).type;
      if (type === "PRODUCER_FENCED" || type === "INVALID_PRODUCER_EPOCH") {
        this.fenced = error;
        await this.producer.disconnect().catch(() => {});
      }
      throw error;
    } finally {
      if (!ok && tx?.isActive()) await tx.abort().catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  const producer = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  return new Publisher(producer);
}
