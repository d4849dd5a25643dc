// Valid: one shared channel, delivery tags counted by hand from confirm.select and settled from the channel's ack/nack events (multiple expanded), pending batches failed on close
import type { ChannelModel } from "amqplib";
import { DEFAULT_BATCH_CONFIRM_TIMEOUT_MS } from "msglab/contracts/batch-confirms";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

interface Pending {
  batch: Batch;
  index: number;
}
interface Batch {
  outcome: (boolean | undefined)[];
  answered: number;
  settle: (why: string | null) => void;
}

export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  const timeoutMs = options.confirmTimeoutMs ?? DEFAULT_BATCH_CONFIRM_TIMEOUT_MS;
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  await ch.assertExchange(exchange, "topic", { durable: true });
  let nextTag = 1;
  let closed = false;
  const pending = new Map<number, Pending>();
  const answer = (tag: number, ok: boolean) => {
    const p = pending.get(tag);
    if (!p) return; // a late answer for a batch that timed out
    pending.delete(tag);
    if (p.batch.outcome[p.index] !== undefined) return;
    p.batch.outcome[p.index] = ok;
    if (++p.batch.answered === p.batch.outcome.length) p.batch.settle(null);
  };
  const onConfirm = (ok: boolean) => (f: { deliveryTag: number; multiple: boolean }) => {
    if (!f.multiple) return answer(f.deliveryTag, ok);
    for (const tag of [...pending.keys()].sort((a, b) => a - b)) if (tag <= f.deliveryTag) answer(tag, ok);
  };
  ch.on("ack", onConfirm(true));
  ch.on("nack", onConfirm(false));
  ch.on("close", () => {
    closed = true;
    const batches = new Set([...pending.values()].map((p) => p.batch));
    pending.clear();
    for (const b of batches) b.settle("the channel closed");
  });

  return {
    publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt> {
      if (messages.length === 0) return Promise.resolve({ messageIds: [] });
      return new Promise((resolve, reject) => {
        let done = false;
        const batch: Batch = {
          outcome: new Array(messages.length),
          answered: 0,
          settle: (why) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            for (const [tag, p] of pending) if (p.batch === batch) pending.delete(tag);
            const failedIds = messages.filter((_, i) => batch.outcome[i] !== true).map((m) => m.messageId);
            if (failedIds.length) reject(Object.assign(new Error(`not confirmed${why ? ` (${why})` : ""}`), { failedIds }));
            else resolve({ messageIds: messages.map((m) => m.messageId) });
          },
        };
        const timer = setTimeout(() => batch.settle("deadline"), timeoutMs);
        if (closed) return batch.settle("the channel is closed");
        for (let i = 0; i < messages.length; i++) {
          const m = messages[i]!;
          try {
            ch.publish(exchange, m.routingKey, Buffer.from(JSON.stringify(m.event)), { persistent: true, messageId: m.messageId, contentType: "application/json" });
          } catch {
            return batch.settle("the channel is closed");
          }
          pending.set(nextTag++, { batch, index: i });
        }
      });
    },
    async close() {
      if (closed) return;
      await ch.close();
    },
  };
}
