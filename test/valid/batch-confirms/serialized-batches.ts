// Valid: batches on one publisher run one after another (a promise chain): a call waits for the one before it to settle before it publishes, each message settled by its own publish callback, the deadline still counted from each call
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
  // The batch before this one: the next waits for it to settle.
  let tail: Promise<unknown> = Promise.resolve();

  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const n = messages.length;
      if (n === 0) return Promise.resolve({ messageIds: [] });
      const calledAt = Date.now();
      const run = tail.then(
        () =>
          new Promise<BatchReceipt>((resolve, reject) => {
            const outcome: ("ack" | "nack" | "lost" | undefined)[] = new Array(n);
            let answered = 0;
            let settled = false;
            const finish = () => {
              if (settled) return;
              settled = true;
              clearTimeout(timer);
              const failedIds = messages.filter((_, i) => outcome[i] !== "ack").map((m) => m.messageId);
              if (failedIds.length === 0) resolve({ messageIds: messages.map((m) => m.messageId) });
              else reject(Object.assign(new Error(`${failedIds.length} of ${n} not confirmed`), { failedIds }));
            };
            const timer = setTimeout(finish, Math.max(0, calledAt + timeoutMs - Date.now()));
            if (closed || calledAt + timeoutMs <= Date.now()) return finish();
            for (let i = 0; i < n; i++) {
              const m = messages[i]!;
              try {
                ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event), "utf8"), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
                  if (outcome[i] !== undefined) return;
                  outcome[i] = err ? (/closed/i.test(err.message) ? "lost" : "nack") : "ack";
                  answered++;
                  if (answered === n || closed) finish();
                });
              } catch {
                return finish();
              }
            }
          }),
      );
      tail = run.catch(() => {});
      return run;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
