// Mutant: confirms tracked as a queue of pending publishes, each ack or nack settling the oldest one (assuming the broker answers in order, one frame per message); a publish that times out leaves the queue, so a late confirm settles a newer publish
// @targets without a confirm, publish() waits until its deadline, then rejects
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

  // Oldest first: the broker confirms in publish order.
  const queue: Pending[] = [];
  ch.on("ack", (f: { multiple: boolean }) => {
    const n = f.multiple ? queue.length : 1;
    for (const p of queue.splice(0, n)) p.resolve();
  });
  ch.on("nack", () => queue.shift()?.reject(new Error("message nacked")));
  ch.on("close", () => {
    closed = true;
    for (const p of queue.splice(0)) p.reject(new Error("channel closed"));
  });

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      return new Promise<PublishReceipt>((resolve, reject) => {
        const entry: Pending = {
          resolve: () => {
            clearTimeout(timer);
            resolve({ messageId });
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        const timer = setTimeout(() => {
          const i = queue.indexOf(entry);
          if (i >= 0) queue.splice(i, 1);
          reject(new Error(`no confirm within ${timeoutMs} ms`));
        }, timeoutMs);
        try {
          ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event), "utf8"), {
            persistent: true,
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            contentType: "application/json",
          });
          queue.push(entry);
        } catch (e) {
          entry.reject(e as Error);
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
