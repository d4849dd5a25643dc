// Mutant: tracks delivery tags by hand (multiple handled) but never fails what is pending when the channel closes: a cut connection leaves the batch hanging until its deadline
// @targets a batch whose connection or channel closes mid-way rejects at once
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
  const settle = (f: { deliveryTag: number; multiple: boolean }, ok: boolean) => {
    for (const [tag, cb] of [...waiting]) {
      if (tag === f.deliveryTag || (f.multiple && tag <= f.deliveryTag)) {
        waiting.delete(tag);
        cb(ok);
      }
    }
  };
  ch.on("ack", (f: { deliveryTag: number; multiple: boolean }) => settle(f, true));
  ch.on("nack", (f: { deliveryTag: number; multiple: boolean }) => settle(f, false));
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
            // a closed channel: the deadline will report it
          }
        });
      });
    },
    async close() {
      await ch.close();
    },
  };
}
