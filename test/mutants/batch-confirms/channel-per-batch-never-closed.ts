// Mutant: opens a fresh confirm channel for every batch and never closes it: channels pile up on the caller's connection
// @targets close() closes the publisher's channels and nothing else
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  void options;
  const setup = await connection.createChannel();
  await setup.assertExchange(exchange, "topic", { durable: true });
  await setup.close();
  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const ch = await connection.createConfirmChannel();
      ch.on("error", () => {});
      const ok = await Promise.all(
        messages.map(
          (m) =>
            new Promise<boolean>((resolve) => {
              try {
                ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => resolve(!err));
              } catch {
                resolve(false);
              }
            }),
        ),
      );
      const failedIds = messages.filter((_, i) => !ok[i]).map((m) => m.messageId);
      if (failedIds.length) throw Object.assign(new Error("not confirmed"), { failedIds });
      return { messageIds: messages.map((m) => m.messageId) };
    },
    async close() {},
  };
}
