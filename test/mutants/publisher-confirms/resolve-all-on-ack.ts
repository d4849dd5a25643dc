// Mutant: any ack from the broker is taken to mean "everything sent so far is safe", so a nacked message in between resolves too
// @targets concurrent publishes each settle on their own message's confirm
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
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });

  let pending: Pending[] = [];
  const settleAll = (err: Error | null) => {
    const now = pending;
    pending = [];
    for (const p of now) (err ? p.reject(err) : p.resolve());
  };
  ch.on("ack", () => settleAll(null));
  ch.on("nack", () => settleAll(new Error("message nacked")));
  ch.on("close", () => {
    closed = true;
    settleAll(new Error("channel closed"));
  });

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      return new Promise<PublishReceipt>((resolve, reject) => {
        try {
          ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event), "utf8"), {
            persistent: true,
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            contentType: "application/json",
          });
          pending.push({ resolve: () => resolve({ messageId }), reject });
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
