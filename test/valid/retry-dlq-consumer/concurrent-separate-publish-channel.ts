// Valid: consumes on a plain channel with prefetch 10 and handlers running side by side; retry copies go out on a confirm channel of their own, each acked original settled on its own copy's callback
import type { ChannelModel, ConsumeMessage } from "amqplib";
import type { MessageHandler, RetryConsumer, RetryOptions } from "msglab/contracts/retry-dlq-consumer";

export async function setupRetryTopology(connection: ChannelModel, queue: string, options: RetryOptions): Promise<void> {
  const ch = await connection.createChannel();
  try {
    await ch.assertQueue(`${queue}.retry`, { durable: true, arguments: { "x-message-ttl": options.retryDelayMs, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue } });
    await ch.assertQueue(queue, { durable: true, arguments: { "x-dead-letter-exchange": `${queue}.dlx`, "x-dead-letter-routing-key": `${queue}.dlq` } });
    await ch.assertExchange(`${queue}.dlx`, "direct", { durable: true });
    await ch.assertQueue(`${queue}.dlq`, { durable: true });
    await ch.bindQueue(`${queue}.dlq`, `${queue}.dlx`, `${queue}.dlq`);
  } finally {
    await ch.close();
  }
}

export async function startRetryConsumer(connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions): Promise<RetryConsumer> {
  const consume = await connection.createChannel();
  const publish = await connection.createConfirmChannel();
  consume.on("error", () => {});
  publish.on("error", () => {});
  await consume.prefetch(10);
  const running = new Set<Promise<void>>();

  const copy = (msg: ConsumeMessage, count: number) =>
    new Promise<boolean>((resolve) => {
      // Every property carries over, but the delivery mode (persistent below) and any expiration.
      const { headers, deliveryMode, expiration, ...rest } = msg.properties;
      void deliveryMode;
      void expiration;
      try {
        publish.publish("", `${queue}.retry`, msg.content, { ...rest, persistent: true, headers: { ...headers, "x-retry-count": count } }, (err) => resolve(!err));
      } catch {
        resolve(false);
      }
    });

  const handle = async (msg: ConsumeMessage) => {
    const raw = msg.properties.headers?.["x-retry-count"];
    const retryCount = typeof raw === "number" && raw > 0 ? raw : 0;
    try {
      await handler({ messageId: String(msg.properties.messageId), body: JSON.parse(msg.content.toString()), retryCount });
      consume.ack(msg);
      return;
    } catch {
      // fall through
    }
    if (retryCount >= options.maxRetries) return consume.reject(msg, false);
    // Only the broker's ack of the copy makes it safe to let go of the original.
    if (await copy(msg, retryCount + 1)) consume.ack(msg);
    else consume.nack(msg, false, true);
  };

  const { consumerTag } = await consume.consume(queue, (msg) => {
    if (!msg) return;
    const p = handle(msg).catch(() => {});
    running.add(p);
    void p.finally(() => running.delete(p));
  });
  return {
    async stop() {
      await consume.cancel(consumerTag);
      await Promise.allSettled([...running]);
      await consume.close().catch(() => {});
      await publish.close().catch(() => {});
    },
  };
}
