// Mutant: confirms tracked by hand by delivery tag; when the channel closes, the publishes still waiting are resolved ("they were sent, so they arrived")
// @targets a publish whose connection drops before its confirm rejects
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
  const confirm = (f: { deliveryTag: number; multiple: boolean }, err: Error | null) => {
    for (const tag of [...pending.keys()]) if (tag === f.deliveryTag || (f.multiple && tag < f.deliveryTag)) settle(tag, err);
  };
  ch.on("ack", (f: { deliveryTag: number; multiple: boolean }) => confirm(f, null));
  ch.on("nack", (f: { deliveryTag: number; multiple: boolean }) => confirm(f, new Error("message nacked")));
  ch.on("close", () => {
    closed = true;
    // They went out on the socket before it closed.
    for (const tag of [...pending.keys()]) settle(tag, null);
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
