// Mutant: keeps every answer in one publisher-wide Map by messageId and never forgets it: a batch that republishes failed ids settles at once on their old answers
// @targets a nack anywhere in the batch rejects the call, naming exactly the nacked messages
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  // messageId -> the broker's answer, for every message this publisher ever sent.
  const answers = new Map<string, "ack" | "nack" | "lost">();
  const waiters = new Set<() => void>();
  const wake = () => { for (const w of [...waiters]) w(); };
  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return Promise.resolve({ messageIds: [] });
      const ids = messages.map((m) => m.messageId);
      return new Promise<BatchReceipt>((resolve, reject) => {
        let done = false;
        const finish = (force: boolean) => {
          if (done) return;
          if (!force && !closed && !ids.every((id) => answers.has(id))) return;
          done = true;
          waiters.delete(check);
          clearTimeout(timer);
          const failed = ids.filter((id) => answers.get(id) !== "ack");
          if (failed.length) reject(Object.assign(new Error(`${failed.length} not confirmed`), { failedIds: failed }));
          else resolve({ messageIds: ids });
        };
        const check = () => finish(false);
        waiters.add(check);
        const timer = setTimeout(() => finish(true), timeoutMs);
        for (const m of messages) {
          try {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event), "utf8"), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
              answers.set(m.messageId, err ? (/closed/i.test(err.message) ? "lost" : "nack") : "ack");
              wake();
            });
          } catch {
            for (const id of ids) if (!answers.has(id)) answers.set(id, "lost");
          }
        }
        check();
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
