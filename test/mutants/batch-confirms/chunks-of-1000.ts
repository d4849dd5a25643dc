// Mutant: publishes in chunks of 1000 and waits for each chunk's confirms before the next chunk
// @targets a whole batch is published before any confirm is awaited, past any chunk size
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

/** A rejection that names every message the broker did not ack. */
function batchError(message: string, failedIds: string[]): Error {
  return Object.assign(new Error(message), { failedIds });
}

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  void options;
  // Confirm mode: the broker answers every publish on the channel with basic.ack or basic.nack,
  // numbering them 1, 2, 3, … (often one ack with `multiple` for many). amqplib keeps the
  // numbering and calls each message's own callback with its answer.
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });

  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const CHUNK = 1000;
      const failedIds: string[] = [];
      for (let start = 0; start < messages.length; start += CHUNK) {
        const chunk = messages.slice(start, start + CHUNK);
        const results = await Promise.all(
          chunk.map(
            (m) =>
              new Promise<boolean>((resolve) => {
                try {
                  ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event), "utf8"), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => resolve(!err));
                } catch {
                  resolve(false);
                }
              }),
          ),
        );
        results.forEach((ok, i) => ok || failedIds.push(chunk[i]!.messageId));
      }
      if (failedIds.length) throw batchError(`${failedIds.length} failed`, failedIds);
      return { messageIds: messages.map((m) => m.messageId) };
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
