// Valid: a confirm channel of its own for every batch (as the seed does), closed when the batch settles; the exchange is declared once on a setup channel
import type { ChannelModel, ConfirmChannel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const setup = await connection.createChannel();
  setup.on("error", () => {});
  await setup.assertExchange(exchange, "topic", { durable: true });
  await setup.close();
  const open = new Set<ConfirmChannel>();

  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return { messageIds: [] };
      const startedAt = Date.now();
      let ch: ConfirmChannel;
      try {
        ch = await connection.createConfirmChannel();
      } catch (e) {
        // No channel (the connection is gone): nothing was published.
        throw Object.assign(new Error(`cannot publish: ${(e as Error).message}`), { failedIds: messages.map((m) => m.messageId) });
      }
      ch.on("error", () => {});
      open.add(ch);
      try {
        // Each message's answer, as a promise that never rejects: true for an ack.
        const answers: Promise<boolean>[] = [];
        for (const m of messages) {
          answers.push(
            new Promise<boolean>((resolve) => {
              try {
                ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => resolve(!err));
              } catch {
                resolve(false);
              }
            }),
          );
        }
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<"deadline">((resolve) => (timer = setTimeout(() => resolve("deadline"), Math.max(0, startedAt + timeoutMs - Date.now()))));
        const got: (boolean | undefined)[] = new Array(messages.length);
        answers.forEach((p, i) => void p.then((v) => (got[i] = v)));
        await Promise.race([Promise.all(answers), deadline]);
        clearTimeout(timer);
        const failedIds = messages.filter((_, i) => got[i] !== true).map((m) => m.messageId);
        if (failedIds.length) throw Object.assign(new Error(`${failedIds.length} message(s) not confirmed`), { failedIds });
        return { messageIds: messages.map((m) => m.messageId) };
      } finally {
        // Not awaited: a close waits for the broker's close-ok, which queues behind any late
        // confirms; the batch's outcome must not wait for it.
        open.delete(ch);
        void ch.close().catch(() => {});
      }
    },
    async close() {
      await Promise.all([...open].map((ch) => ch.close().catch(() => {})));
    },
  };
}
