// Valid: respects amqplib's write buffer (waits for "drain" when publish() returns false) and collects answers with Promise.allSettled, the deadline raced against them
import { once } from "node:events";
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  let closed = false;
  ch.on("close", () => (closed = true));
  await ch.assertExchange(exchange, "topic", { durable: true });
  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const state: ("ack" | "failed" | undefined)[] = new Array(messages.length);
      const answers: Promise<void>[] = [];
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
      const closedNow = new Promise<void>((resolve) => ch.once("close", () => resolve()));
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i]!;
        let more = true;
        try {
          answers.push(
            new Promise<void>((resolve) => {
              more = ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
                state[i] ??= err ? "failed" : "ack";
                resolve();
              });
            }),
          );
        } catch {
          break; // the channel is closed: this and the rest count as failed
        }
        // A full write buffer: wait until it drains (or the channel closes) before the next publish.
        if (!more && !closed) await Promise.race([once(ch, "drain"), closedNow]);
      }
      await Promise.race([Promise.allSettled(answers), deadline]);
      clearTimeout(timer);
      const failedIds = messages.filter((_, i) => state[i] !== "ack").map((m) => m.messageId);
      if (failedIds.length) throw Object.assign(new Error(`${failedIds.length} of ${messages.length} not confirmed`), { failedIds });
      return { messageIds: messages.map((m) => m.messageId) };
    },
    async close() {
      if (!closed) await ch.close();
    },
  };
}
