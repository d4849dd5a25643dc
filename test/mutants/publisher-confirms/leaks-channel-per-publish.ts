// Mutant: a confirm channel per publish (waited on correctly) that is never closed: channels pile up
// @targets close() closes the publisher's channels and nothing else
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import type { DomainEvent, Publisher, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  const setup = await connection.createChannel();
  await setup.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
  await setup.close();
  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const ch = await connection.createConfirmChannel();
      ch.on("error", () => {});
      const messageId = randomUUID();
      await new Promise<void>((resolve, reject) => {
        ch.publish(
          exchange,
          routingKey,
          Buffer.from(JSON.stringify(event), "utf8"),
          { persistent: true, messageId, timestamp: Math.floor(Date.now() / 1000), contentType: "application/json" },
          (err) => (err ? reject(err) : resolve()),
        );
      });
      return { messageId };
    },
    async close() {},
  };
}
