// Valid: after the last retry it publishes the message to the DLX itself (confirmed, x-retry-count kept) and then acks, instead of rejecting it into the main queue's dead-letter exchange; waits for confirms with waitForConfirms on a publish channel used one copy at a time
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import type { MessageHandler, RetryConsumer, RetryOptions } from "msglab/contracts/retry-dlq-consumer";

export async function setupRetryTopology(connection: ChannelModel, queue: string, options: RetryOptions): Promise<void> {
  const ch = await connection.createChannel();
  await ch.assertExchange(`${queue}.dlx`, "direct", { durable: true });
  await ch.assertQueue(`${queue}.dlq`, { durable: true });
  await ch.bindQueue(`${queue}.dlq`, `${queue}.dlx`, `${queue}.dlq`);
  await ch.assertQueue(queue, { durable: true, deadLetterExchange: `${queue}.dlx`, deadLetterRoutingKey: `${queue}.dlq` });
  await ch.assertQueue(`${queue}.retry`, { durable: true, messageTtl: options.retryDelayMs, deadLetterExchange: "", deadLetterRoutingKey: queue });
  await ch.close();
}

/** Publishes one message and resolves true once the broker acked it (the channel carries nothing else meanwhile). */
async function confirmed(ch: ConfirmChannel, exchange: string, key: string, msg: ConsumeMessage, count: number): Promise<boolean> {
  const p = msg.properties;
  try {
    ch.publish(exchange, key, msg.content, {
      persistent: true,
      messageId: p.messageId,
      contentType: p.contentType,
      contentEncoding: p.contentEncoding,
      correlationId: p.correlationId,
      replyTo: p.replyTo,
      appId: p.appId,
      type: p.type,
      timestamp: p.timestamp,
      priority: p.priority,
      headers: { ...p.headers, "x-retry-count": count },
    });
    await ch.waitForConfirms();
    return true;
  } catch {
    return false;
  }
}

export async function startRetryConsumer(connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions): Promise<RetryConsumer> {
  const consume: Channel = await connection.createChannel();
  const publish = await connection.createConfirmChannel();
  consume.on("error", () => {});
  publish.on("error", () => {});
  await consume.prefetch(1);
  let busy: Promise<void> = Promise.resolve();
  const { consumerTag } = await consume.consume(queue, (msg) => {
    if (!msg) return;
    // One message at a time (prefetch 1), so waitForConfirms only ever waits for our one copy.
    busy = busy.then(async () => {
      const count = Number(msg.properties.headers?.["x-retry-count"] ?? 0) || 0;
      try {
        await handler({ messageId: String(msg.properties.messageId), body: JSON.parse(msg.content.toString("utf8")), retryCount: count });
        consume.ack(msg);
        return;
      } catch {
        // retry or dead-letter
      }
      const last = count >= options.maxRetries;
      const ok = last ? await confirmed(publish, `${queue}.dlx`, `${queue}.dlq`, msg, count) : await confirmed(publish, "", `${queue}.retry`, msg, count + 1);
      if (ok) consume.ack(msg);
      else consume.nack(msg, false, true);
    }).catch(() => {});
  });
  return {
    async stop() {
      await consume.cancel(consumerTag);
      await busy;
      await consume.close().catch(() => {});
      await publish.close().catch(() => {});
    },
  };
}
