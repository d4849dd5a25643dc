// Mutant: publishes the batch and awaits channel.waitForConfirms() on the publisher's one shared channel, which also waits for (and fails on) other batches' messages
// @targets concurrent batches on one publisher each settle on their own messages' confirms
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  void options;
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const results = messages.map(
        (m) =>
          new Promise<boolean>((resolve) => {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => resolve(!err));
          }),
      );
      try {
        await ch.waitForConfirms();
      } catch {
        // Some message on the channel was nacked: wait for our own answers to say which.
        const ok = await Promise.all(results);
        const failedIds = messages.filter((_, i) => !ok[i]).map((m) => m.messageId);
        throw Object.assign(new Error("batch nacked"), { failedIds: failedIds.length ? failedIds : messages.map((m) => m.messageId) });
      }
      return { messageIds: messages.map((m) => m.messageId) };
    },
    async close() {
      await ch.close();
    },
  };
}
