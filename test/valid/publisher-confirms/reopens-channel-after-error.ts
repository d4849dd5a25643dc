// Valid: recovers from channel errors: when the broker closes the channel, the next publish() opens a fresh confirm channel and declares the exchange again before publishing (if that fails, the publish rejects); per-message callbacks, deadline by Promise.race
import { randomUUID } from "node:crypto";
import type { ChannelModel, ConfirmChannel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
  let current: Promise<ConfirmChannel> | null = null;
  let shutDown = false;

  const open = (): Promise<ConfirmChannel> => {
    const p = (async () => {
      const ch = await connection.createConfirmChannel();
      ch.on("error", (err: Error) => console.warn(`publisher channel error: ${err.message}`));
      ch.on("close", () => {
        if (current === p) current = null;
      });
      await ch.assertExchange(exchange, "topic", { durable: true });
      return ch;
    })();
    // A failed open is forgotten, so the next publish tries again.
    p.catch(() => {
      if (current === p) current = null;
    });
    current = p;
    return p;
  };
  await open();

  return {
    async publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      if (shutDown) throw new Error("publisher closed");
      const messageId = randomUUID();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no confirm within ${timeoutMs} ms`)), timeoutMs);
      });
      const confirmed = (async () => {
        const ch = await (current ?? open());
        await new Promise<void>((resolve, reject) => {
          ch.publish(
            exchange,
            routingKey,
            Buffer.from(JSON.stringify(event)),
            { persistent: true, messageId, timestamp: Math.floor(Date.now() / 1000), contentType: "application/json" },
            (err) => (err ? reject(err) : resolve()),
          );
        });
      })();
      try {
        await Promise.race([confirmed, deadline]);
        return { messageId };
      } finally {
        clearTimeout(timer);
        confirmed.catch(() => {});
      }
    },
    async close() {
      shutDown = true;
      const p = current;
      current = null;
      if (!p) return;
      const ch = await p.catch(() => null);
      await ch?.close().catch(() => {});
    },
  };
}
