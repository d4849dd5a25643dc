// Mutant: confirms tracked by hand; a channel error is handled by closing the whole connection ("start clean"), which kills every other publisher on it
// @targets a channel the broker closes fails its pending publishes, and nothing crashes or hangs
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

interface Pending {
  settle(err: Error | null): void;
}

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("error", () => {
    connection.close().catch(() => {});
  });
  await ch.assertExchange(exchange, "topic", { durable: true });

  // The broker numbers a confirm channel's publishes 1, 2, 3, …; so do we.
  let nextTag = 1;
  const pending = new Map<number, Pending>();
  const confirm = (f: { deliveryTag: number; multiple: boolean }, err: Error | null) => {
    const tags = f.multiple ? [...pending.keys()].filter((t) => t <= f.deliveryTag) : [f.deliveryTag];
    for (const t of tags) pending.get(t)?.settle(err);
  };
  ch.on("ack", (f: { deliveryTag: number; multiple: boolean }) => confirm(f, null));
  ch.on("nack", (f: { deliveryTag: number; multiple: boolean }) => confirm(f, new Error("nacked by the broker")));
  ch.on("close", () => {
    closed = true;
    for (const p of [...pending.values()]) p.settle(new Error("channel closed before the confirm"));
  });

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      return new Promise<PublishReceipt>((resolve, reject) => {
        if (closed) return reject(new Error("publisher's channel is closed"));
        const messageId = randomUUID();
        const tag = nextTag;
        const entry: Pending = {
          settle(err) {
            if (pending.get(tag) !== entry) return;
            pending.delete(tag);
            clearTimeout(timer);
            if (err) reject(err);
            else resolve({ messageId });
          },
        };
        const timer = setTimeout(() => entry.settle(new Error(`no confirm within ${timeoutMs} ms`)), timeoutMs);
        pending.set(tag, entry);
        try {
          ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event)), {
            persistent: true,
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            contentType: "application/json",
          });
          nextTag++;
        } catch (e) {
          entry.settle(e as Error);
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
