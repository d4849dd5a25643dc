// Mutant: close() always calls channel.close(), which rejects ("Channel closed") once the broker has closed the channel
// @targets a channel the broker closes fails its pending publishes, and nothing crashes or hangs
import { randomUUID } from "node:crypto";
import type { ChannelModel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS;
  // Confirm mode: the broker answers every publish on this channel with basic.ack (it has taken
  // responsibility for the message: routed, and written to disk for durable queues) or
  // basic.nack (it refused it). amqplib hands each answer to that message's callback.
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  // A channel error (say, the exchange was deleted under us) closes the channel; the pending
  // publishes reject through their callbacks. Without a listener it would crash the process.
  ch.on("error", () => {});

  // Durable: the exchange survives a broker restart (persistent messages need durable
  // exchanges and queues to survive it too). Topic: consumers bind with patterns.
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });

  return {
    publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
      const messageId = randomUUID();
      const body = Buffer.from(JSON.stringify(event), "utf8");
      return new Promise<PublishReceipt>((resolve, reject) => {
        // The deadline counts from this call. A promise settles once: whichever comes first
        // (the confirm, the channel closing, the deadline) decides, and the rest is ignored,
        // so a confirm that arrives after the deadline settles nothing.
        const timer = setTimeout(() => {
          reject(new Error(`message ${messageId} to "${routingKey}": no confirm from the broker within ${timeoutMs} ms`));
        }, timeoutMs);
        try {
          // The callback belongs to this message alone: it runs on this message's ack or nack,
          // or with an error when the channel closes before the confirm arrived. Unlike
          // waitForConfirms(), another message's nack never fails this one.
          ch.publish(
            exchange,
            routingKey,
            body,
            {
              persistent: true,
              messageId,
              timestamp: Math.floor(Date.now() / 1000),
              contentType: "application/json",
            },
            (err) => {
              clearTimeout(timer);
              if (err) reject(new Error(`message ${messageId} to "${routingKey}" was not confirmed: ${err.message}`));
              else resolve({ messageId });
            },
          );
          // publish() returning false only means amqplib's write buffer is full; the message is
          // still queued and its callback still runs, so the confirm is all we wait for.
        } catch (e) {
          // The channel is already closed: nothing was sent.
          clearTimeout(timer);
          reject(e);
        }
      });
    },

    async close(): Promise<void> {
      await ch.close();
    },
  };
}
