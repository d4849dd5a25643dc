// Mutant: fire-and-forget: a plain channel (no confirm mode) and publish() resolves as soon as the message is written
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
      return { messageId };
    },
    async close() {
      await ch.close().catch(() => {});
    },
  };
}
