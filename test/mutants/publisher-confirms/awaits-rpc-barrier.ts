// Mutant: no confirm mode; after publishing it awaits a round trip (checkExchange) as proof that the broker "has" the message
// @targets publish() resolves only after the broker confirms the message
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import type { DomainEvent, Publisher, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  const ch = await connection.createChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event)), {
        persistent: true,
        messageId,
        timestamp: Math.floor(Date.now() / 1000),
        contentType: "application/json",
      });
      // The broker handles a channel's frames in order: once this answers, the publish was processed.
      await ch.checkExchange(exchange);
      return { messageId };
    },
    async close() {
      await ch.close().catch(() => {});
    },
  };
}
