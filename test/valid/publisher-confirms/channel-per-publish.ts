// Valid: a confirm channel of its own for every publish, waited on with waitForConfirms() (which then concerns that one message) and closed right after; the deadline is a Promise.race
import { randomUUID } from "node:crypto";
import type { ChannelModel, ConfirmChannel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
  const setup = await connection.createChannel();
  await setup.assertExchange(exchange, "topic", { durable: true, autoDelete: false });
  await setup.close();
  const open = new Set<ConfirmChannel>();

  const shut = async (ch: ConfirmChannel) => {
    if (!open.delete(ch)) return;
    await ch.close().catch(() => {});
  };

  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      const ch = await connection.createConfirmChannel();
      ch.on("error", () => {});
      open.add(ch);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no confirm within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(event)), {
          persistent: true,
          messageId,
          timestamp: Math.floor(Date.now() / 1000),
          contentType: "application/json",
        });
        // Only this message is outstanding on this channel.
        await Promise.race([ch.waitForConfirms(), deadline]);
        return { messageId };
      } finally {
        clearTimeout(timer);
        // In the background: the caller hears about its message now, not after the cleanup.
        void shut(ch);
      }
    },
    async close() {
      await Promise.all([...open].map(shut));
    },
  };
}
