// Mutant: tracks delivery tags by hand from the channel's ack/nack events but ignores the multiple flag, so an ack for many settles one
// @targets an ack with multiple set settles every message up to its tag
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  let nextTag = 1;
  const waiting = new Map<number, (ok: boolean) => void>();
  ch.on("ack", (f: { deliveryTag: number }) => {
    waiting.get(f.deliveryTag)?.(true);
    waiting.delete(f.deliveryTag);
  });
  ch.on("nack", (f: { deliveryTag: number }) => {
    waiting.get(f.deliveryTag)?.(false);
    waiting.delete(f.deliveryTag);
  });
  ch.on("close", () => {
    for (const cb of waiting.values()) cb(false);
    waiting.clear();
  });
  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return Promise.resolve({ messageIds: [] });
      return new Promise((resolve, reject) => {
        const ok: (boolean | undefined)[] = new Array(messages.length);
        let answered = 0;
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          const failedIds = messages.filter((_, i) => ok[i] !== true).map((m) => m.messageId);
          if (failedIds.length) reject(Object.assign(new Error("not confirmed"), { failedIds }));
          else resolve({ messageIds: messages.map((m) => m.messageId) });
        };
        const timer = setTimeout(finish, timeoutMs);
        messages.forEach((m, i) => {
          const tag = nextTag++;
          waiting.set(tag, (v) => {
            ok[i] = v;
            if (++answered === messages.length) finish();
          });
          try {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" });
          } catch {
            finish();
          }
        });
      });
    },
    async close() {
      await ch.close();
    },
  };
}
