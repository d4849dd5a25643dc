// Valid: when the broker nacks a retry copy it publishes the copy again, up to three times, and acks the original only after a copy is confirmed (else requeues it)
import type { ChannelModel, ConsumeMessage, Options } from "amqplib";
import { DLQ_SUFFIX, DLX_SUFFIX, RETRY_COUNT_HEADER, RETRY_SUFFIX } from "msglab/contracts/retry-dlq-consumer";
import type { MessageHandler, RetryConsumer, RetryOptions } from "msglab/contracts/retry-dlq-consumer";

export async function setupRetryTopology(connection: ChannelModel, queue: string, options: RetryOptions): Promise<void> {
  const ch = await connection.createChannel();
  ch.on("error", () => {});
  try {
    // The dead-letter queue: where a message goes after its last retry, for a person to look at.
    await ch.assertExchange(queue + DLX_SUFFIX, "direct", { durable: true });
    await ch.assertQueue(queue + DLQ_SUFFIX, { durable: true });
    await ch.bindQueue(queue + DLQ_SUFFIX, queue + DLX_SUFFIX, queue + DLQ_SUFFIX);
    // The main queue dead-letters what is rejected without requeue into the DLQ.
    await ch.assertQueue(queue, { durable: true, deadLetterExchange: queue + DLX_SUFFIX, deadLetterRoutingKey: queue + DLQ_SUFFIX });
    // The retry queue has no consumer: a copy waits there retryDelayMs, expires, and the broker
    // dead-letters it through the default exchange back into the main queue.
    await ch.assertQueue(queue + RETRY_SUFFIX, { durable: true, messageTtl: options.retryDelayMs, deadLetterExchange: "", deadLetterRoutingKey: queue });
  } finally {
    await ch.close().catch(() => {});
  }
}

/** The retry count the message carries (0 when it has none). Never x-death: see the contract. */
function retryCountOf(msg: ConsumeMessage): number {
  const n = Number(msg.properties.headers?.[RETRY_COUNT_HEADER] ?? 0);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/** The original's properties for its copy: everything but expiration (the retry queue's TTL decides). */
function copyOptions(msg: ConsumeMessage, retryCount: number): Options.Publish {
  const p = msg.properties;
  const out: Options.Publish = {
    persistent: true,
    headers: { ...(p.headers ?? {}), [RETRY_COUNT_HEADER]: retryCount },
  };
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.contentEncoding !== undefined) out.contentEncoding = p.contentEncoding;
  if (p.correlationId !== undefined) out.correlationId = p.correlationId;
  if (p.replyTo !== undefined) out.replyTo = p.replyTo;
  if (p.messageId !== undefined) out.messageId = p.messageId;
  if (p.timestamp !== undefined) out.timestamp = p.timestamp;
  if (p.type !== undefined) out.type = p.type;
  if (p.appId !== undefined) out.appId = p.appId;
  if (p.priority !== undefined) out.priority = p.priority;
  return out;
}

export async function startRetryConsumer(connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions): Promise<RetryConsumer> {
  // One confirm channel: it consumes, and it publishes the retry copies, whose confirms say
  // when the broker has them.
  const ch = await connection.createConfirmChannel();
  ch.on("error", () => {});
  await ch.prefetch(1);
  const inFlight = new Set<Promise<void>>();

  const settle = (fn: () => void) => {
    try {
      fn();
    } catch {
      // The channel closed: the broker puts the delivery back in the queue by itself.
    }
  };

  const work = async (msg: ConsumeMessage): Promise<void> => {
    const retryCount = retryCountOf(msg);
    try {
      // A body that does not parse fails like a handler would (bodies are JSON in this lab).
      const body: unknown = JSON.parse(msg.content.toString("utf8"));
      await handler({ messageId: String(msg.properties.messageId), body, retryCount });
      settle(() => ch.ack(msg));
      return;
    } catch {
      // failed: retry or dead-letter below
    }
    if (retryCount >= options.maxRetries) {
      // The main queue's DLX routes it to the DLQ, headers (x-retry-count) and all.
      settle(() => ch.reject(msg, false));
      return;
    }
    // A refused copy is published again (up to three times) before the original goes back.
    for (let attempt = 0; attempt < 3; attempt++) {
      const ok = await new Promise<boolean>((resolve) => {
        try {
          ch.sendToQueue(queue + RETRY_SUFFIX, msg.content, copyOptions(msg, retryCount + 1), (err) => resolve(!err));
        } catch {
          resolve(false);
        }
      });
      if (ok) return settle(() => ch.ack(msg));
    }
    settle(() => ch.nack(msg, false, true));
  };

  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (msg === null) return;
      const p = work(msg);
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    },
    { noAck: false },
  );

  return {
    async stop() {
      await ch.cancel(consumerTag);
      await Promise.allSettled([...inFlight]);
      await ch.close().catch(() => {});
    },
  };
}
