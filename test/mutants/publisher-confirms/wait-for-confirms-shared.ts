// Mutant: each publish waits with waitForConfirms() on the shared channel, so one message's nack fails every publish in flight
// @targets concurrent publishes each settle on their own message's confirm
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import type { DomainEvent, Publisher, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event), "utf8"), {
        persistent: true,
        messageId,
        timestamp: Math.floor(Date.now() / 1000),
        contentType: "application/json",
      });
      await ch.waitForConfirms();
      return { messageId };
    },
    async close() {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
