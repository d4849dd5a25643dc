// Mutant: counts confirms in one counter for the whole publisher, so two batches in flight settle on each other's confirms
// @targets concurrent batches on one publisher each settle on their own messages' confirms
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  void options;
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  // One batch's worth of state at a time: the newest batch takes it over.
  let current: { n: number; answered: number; nacked: string[]; done: (nacked: string[]) => void } | null = null;
  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return Promise.resolve({ messageIds: [] });
      return new Promise((resolve, reject) => {
        const state = {
          n: messages.length,
          answered: 0,
          nacked: [] as string[],
          done: (nacked: string[]) => (nacked.length ? reject(Object.assign(new Error("nacked"), { failedIds: nacked })) : resolve({ messageIds: messages.map((m) => m.messageId) })),
        };
        current = state;
        for (const m of messages) {
          ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
            const s = current!;
            if (err) s.nacked.push(m.messageId);
            if (++s.answered === s.n) s.done(s.nacked);
          });
        }
      });
    },
    async close() {
      await ch.close();
    },
  };
}
