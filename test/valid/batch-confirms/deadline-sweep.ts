// Valid: one sweep interval per publisher checks every open batch's deadline (no timer per batch), and each message's answer is a promise of its own, collected per batch
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

type Answer = "ack" | "nack" | "lost";

interface Open {
  deadline: number;
  answers: (Answer | undefined)[];
  ids: string[];
  settle: (why: string) => void;
}

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  const open = new Set<Open>();
  let gone = false;
  ch.on("error", () => {});
  ch.on("close", () => {
    gone = true;
    for (const b of [...open]) b.settle("the channel closed");
  });
  await ch.assertExchange(exchange, "topic", { durable: true });

  // One sweep for all batches: a batch past its deadline settles with what it has.
  let sweep: NodeJS.Timeout | null = null;
  const startSweep = () => {
    sweep ??= setInterval(() => {
      const now = Date.now();
      for (const b of [...open]) if (now >= b.deadline) b.settle(`no confirm within ${timeoutMs} ms`);
      if (open.size === 0 && sweep) {
        clearInterval(sweep);
        sweep = null;
      }
    }, 20);
  };

  return {
    async publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return { messageIds: [] };
      const deadline = Date.now() + timeoutMs;
      const ids = messages.map((m) => m.messageId);
      return new Promise<BatchReceipt>((resolve, reject) => {
        const b: Open = {
          deadline,
          answers: new Array(messages.length),
          ids,
          settle: (why) => {
            if (!open.delete(b)) return;
            const failedIds = ids.filter((_, i) => b.answers[i] !== "ack");
            if (failedIds.length === 0) resolve({ messageIds: ids });
            else reject(Object.assign(new Error(`${failedIds.length} of ${ids.length} not confirmed (${why})`), { failedIds }));
          },
        };
        open.add(b);
        startSweep();
        if (gone) return b.settle("the channel is closed");
        let left = messages.length;
        messages.forEach((m, i) => {
          if (!open.has(b)) return;
          try {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event), "utf8"), { persistent: true, messageId: m.messageId, contentType: "application/json" }, (err) => {
              if (b.answers[i] !== undefined) return;
              b.answers[i] = err ? (gone ? "lost" : "nack") : "ack";
              if (--left === 0) b.settle("every answer is in");
            });
          } catch {
            b.settle("the channel is closed");
          }
        });
      });
    },
    async close() {
      if (sweep) clearInterval(sweep);
      sweep = null;
      if (gone) return;
      gone = true;
      await ch.close().catch(() => {});
    },
  };
}
