// Mutant: a plain channel per publish, closed after the publish; the close round trip is taken for a confirm
// @targets publish() resolves only after the broker confirms the message
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import type { DomainEvent, Publisher, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  const setup = await connection.createChannel();
  await setup.assertExchange(exchange, "topic", { durable: true });
  await setup.close();
  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const ch = await connection.createChannel();
      const messageId = randomUUID();
      ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event)), {
        persistent: true,
        messageId,
        timestamp: Math.floor(Date.now() / 1000),
        contentType: "application/json",
      });
      // "Closing flushes the channel, so the broker has it."
      await ch.close();
      return { messageId };
    },
    async close() {},
  };
}
