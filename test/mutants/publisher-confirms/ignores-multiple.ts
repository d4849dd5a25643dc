// Mutant: confirms tracked by hand by delivery tag, but an ack or nack with the multiple flag settles only its own tag, not every unconfirmed one up to it
// @targets concurrent publishes each settle on their own message's confirm
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });

  // Delivery tags count the channel's publishes from 1.
  let nextTag = 1;
  const pending = new Map<number, Pending>();
  const settle = (tag: number, err: Error | null) => {
    const p = pending.get(tag);
    if (!p) return;
    pending.delete(tag);
    if (err) p.reject(err);
    else p.resolve();
  };
  ch.on("ack", (f: { deliveryTag: number }) => settle(f.deliveryTag, null));
  ch.on("nack", (f: { deliveryTag: number }) => settle(f.deliveryTag, new Error("message nacked")));
  ch.on("close", () => {
    closed = true;
    for (const tag of [...pending.keys()]) settle(tag, new Error("channel closed"));
  });

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      return new Promise<PublishReceipt>((resolve, reject) => {
        const tag = nextTag;
        const timer = setTimeout(() => settle(tag, new Error(`no confirm within ${timeoutMs} ms`)), timeoutMs);
        try {
          ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event), "utf8"), {
            persistent: true,
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            contentType: "application/json",
          });
          nextTag++;
          pending.set(tag, {
            resolve: () => {
              clearTimeout(timer);
              resolve({ messageId });
            },
            reject: (e) => {
              clearTimeout(timer);
              reject(e);
            },
          });
        } catch (e) {
          clearTimeout(timer);
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
