// Valid: a class (methods on its prototype) that registers the transactional id when it is created, as Java's initTransactions() does (an empty transaction, aborted), and remembers being fenced so every later publish() rejects without touching the producer
import type { Kafka, Producer } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

const FENCED = new Set(["INVALID_PRODUCER_EPOCH", "PRODUCER_FENCED", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"]);

function isFencing(error: unknown): boolean {
  const type = (error as { type?: unknown } | null)?.type;
  const cause = (error as { cause?: unknown } | null)?.cause;
  return (typeof type === "string" && FENCED.has(type)) || (cause !== undefined && cause !== error && isFencing(cause));
}

class Publisher implements TransactionalPublisher {
  private fencedBy: unknown = null;

  constructor(private readonly producer: Producer) {}

  /** Registers the id at once: an older instance is fenced now, not at our first batch. */
  async init(): Promise<void> {
    await this.producer.connect();
    const tx = await this.producer.transaction();
    await tx.abort();
  }

  async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}): Promise<void> {
    if (this.fencedBy !== null) throw new Error(`this publisher was fenced by a newer instance: ${String(this.fencedBy)}`);
    const tx = await this.producer.transaction();
    let index = 0;
    try {
      for (const message of messages) {
        if (hooks.beforeSend) await hooks.beforeSend(message, index);
        await tx.send({ topic: message.topic, acks: -1, messages: [{ key: message.key, value: message.value }] });
        index++;
      }
      await tx.commit();
    } catch (error) {
      if (isFencing(error)) this.fencedBy = error;
      await tx.abort().catch((abortError: unknown) => {
        if (isFencing(abortError)) this.fencedBy ??= abortError;
      });
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }
}

export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  const publisher = new Publisher(kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 30_000 }));
  await publisher.init();
  return publisher;
}
