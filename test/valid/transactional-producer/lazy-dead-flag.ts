// Valid: the producer is built and connected lazily, on the first publish(); once the broker has fenced it (or an abort failed), the publisher remembers it is dead and every later publish() rejects at once, without touching the broker
import type { Kafka, Producer } from "kafkajs";
import type { OutgoingMessage, PublishHooks, TransactionalPublisher } from "msglab/contracts/transactional-producer";

const FENCED = new Set(["PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"]);

function isFenced(error: unknown): boolean {
  const type = (error as { type?: unknown } | null)?.type;
  return typeof type === "string" && FENCED.has(type);
}

export async function createTransactionalPublisher(kafka: Kafka, transactionalId: string): Promise<TransactionalPublisher> {
  let producer: Producer | null = null;
  let dead: Error | null = null;

  async function ready(): Promise<Producer> {
    if (!producer) {
      const p = kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 });
      await p.connect();
      producer = p;
    }
    return producer;
  }

  return {
    async publish(messages: OutgoingMessage[], hooks: PublishHooks = {}) {
      if (dead) throw new Error(`this publisher was fenced by another one with transactional id ${transactionalId}: ${dead.message}`);
      const tx = await (await ready()).transaction();
      let i = 0;
      try {
        for (; i < messages.length; i++) {
          const m = messages[i]!;
          if (hooks.beforeSend) await hooks.beforeSend(m, i);
          await tx.send({ topic: m.topic, messages: [{ key: m.key, value: m.value }] });
        }
        await tx.commit();
      } catch (error) {
        if (isFenced(error)) dead = error as Error;
        await tx.abort().catch((abortError: unknown) => {
          // An abort that fails leaves the producer unusable: treat it as dead too.
          dead ??= abortError instanceof Error ? abortError : new Error(String(abortError));
        });
        throw error;
      }
    },
    async close() {
      const p = producer;
      producer = null;
      if (p) await p.disconnect();
    },
  };
}
