// Mutant: confirms tracked by hand from the channel's ack/nack events, with nothing failing the pending publishes when the channel closes
// @targets a publish whose connection drops before its confirm rejects
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import type { DomainEvent, Publisher, PublishReceipt } from "msglab/contracts/publisher-confirms";

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });

  // Delivery tags count the channel's publishes from 1.
  let nextTag = 1;
  const pending = new Map<number, Pending>();
  const settle = (fields: { deliveryTag: number; multiple: boolean }, ok: boolean) => {
    for (const [tag, p] of [...pending]) {
      if (tag === fields.deliveryTag || (fields.multiple && tag < fields.deliveryTag)) {
        pending.delete(tag);
        if (ok) p.resolve();
        else p.reject(new Error(`message ${tag} nacked`));
      }
    }
  };
  ch.on("ack", (f: { deliveryTag: number; multiple: boolean }) => settle(f, true));
  ch.on("nack", (f: { deliveryTag: number; multiple: boolean }) => settle(f, false));

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      return new Promise<PublishReceipt>((resolve, reject) => {
        try {
          const tag = nextTag++;
          pending.set(tag, { resolve: () => resolve({ messageId }), reject });
          ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event), "utf8"), {
            persistent: true,
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            contentType: "application/json",
          });
        } catch (e) {
          reject(e);
        }
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
