// Mutant: publishes on a plain channel and resolves as soon as every publish() returned, with no confirm at all
// @targets publishBatch holds the call until every confirm arrives, even when they are held for seconds
// @targets a nack anywhere in the batch rejects the call, naming exactly the nacked messages
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  void options;
  const ch = await connection.createChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      for (const m of messages) ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" });
      return { messageIds: messages.map((m) => m.messageId) };
    },
    async close() {
      await ch.close();
    },
  };
}
