// Mutant: on the deadline or a channel close, reports only the messages still waiting for an answer: the ones already nacked are forgotten (never retried)
// @targets without every confirm, publishBatch rejects at its deadline, naming the unconfirmed messages
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
  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return Promise.resolve({ messageIds: [] });
      return new Promise<BatchReceipt>((resolve, reject) => {
        const pending = new Set(messages.map((m) => m.messageId));
        const nacked: string[] = [];
        let done = false;
        const fail = (ids: string[], why: string) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          reject(Object.assign(new Error(why), { failedIds: messages.map((m) => m.messageId).filter((id) => ids.includes(id)) }));
        };
        const timer = setTimeout(() => fail([...pending], "timed out"), timeoutMs);
        for (const m of messages) {
          try {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event), "utf8"), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
              if (done) return;
              if (err && /closed/i.test(err.message)) return fail([...pending], "channel closed");
              pending.delete(m.messageId);
              if (err) nacked.push(m.messageId);
              if (pending.size === 0) {
                if (nacked.length) return fail(nacked, "nacked");
                done = true;
                clearTimeout(timer);
                resolve({ messageIds: messages.map((x) => x.messageId) });
              } else if (closed) fail([...pending], "channel closed");
            });
          } catch {
            return fail([...pending], "channel closed");
          }
        }
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
