// Mutant: never clears the deadline's timer when the batch settles: every batch leaves a live 30 s timer behind
// @targets publishBatch holds the call until every confirm arrives, even when they are held for seconds
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

/** A rejection that names every message the broker did not ack. */
function batchError(message: string, failedIds: string[]): Error {
  return Object.assign(new Error(message), { failedIds });
}

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  // Confirm mode: the broker answers every publish on the channel with basic.ack or basic.nack,
  // numbering them 1, 2, 3, … (often one ack with `multiple` for many). amqplib keeps the
  // numbering and calls each message's own callback with its answer.
  const ch = await connection.createConfirmChannel();
  let closed = false;
  ch.on("close", () => (closed = true));
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });

  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      const n = messages.length;
      if (n === 0) return Promise.resolve({ messageIds: [] });
      return new Promise<BatchReceipt>((resolve, reject) => {
        // One slot per message: undefined until its confirm (or the channel's close) arrives.
        const outcome: ("ack" | "nack" | "lost" | undefined)[] = new Array(n);
        let answered = 0;
        let settled = false;
        const failed = () => messages.filter((_, i) => outcome[i] !== "ack").map((m) => m.messageId);
        const finish = (why: string | null) => {
          if (settled) return;
          settled = true;
          const ids = failed();
          if (ids.length === 0) resolve({ messageIds: messages.map((m) => m.messageId) });
          else reject(batchError(`${ids.length} of ${n} messages were not confirmed by the broker${why ? ` (${why})` : ""}`, ids));
        };
        // The deadline counts from the call; whatever is unconfirmed then counts as failed.
        const timer = setTimeout(() => finish(`no confirm within ${timeoutMs} ms`), timeoutMs);

        // Every publish first, with no wait in between: the whole batch costs one round trip.
        for (let i = 0; i < n; i++) {
          const m = messages[i]!;
          try {
            ch.publish(
              exchange,
              m.routingKey,
              Buffer.from(JSON.stringify(m.event), "utf8"),
              { persistent: true, messageId: m.messageId, contentType: "application/json" },
              (err) => {
                // amqplib calls this once: null on ack, an error on nack or when the channel
                // closes before the confirm arrived.
                if (outcome[i] !== undefined) return;
                outcome[i] = err ? (/closed/i.test(err.message) ? "lost" : "nack") : "ack";
                answered++;
                if (answered === n) finish(null);
                else if (closed) finish("the channel closed");
              },
            );
          } catch {
            // The channel is closed: this message and the rest never left.
            for (let j = i; j < n; j++) if (outcome[j] === undefined) outcome[j] = "lost";
            finish("the channel is closed");
            return;
          }
        }
      });
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await ch.close();
    },
  };
}
