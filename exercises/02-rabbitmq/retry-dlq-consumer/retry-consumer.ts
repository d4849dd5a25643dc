// Retry and dead-letter queue: failed messages wait in a TTL queue, come back, and after
// maxRetries go to the DLQ. Read README.md for the contract; `msglab run retry-dlq-consumer`
// grades this file.
import type { ChannelModel } from "amqplib";
import type { MessageHandler, RetryConsumer, RetryOptions } from "msglab/contracts/retry-dlq-consumer";

/**
 * Declares, for main queue `queue`: the DLX `queue.dlx` (direct) and the DLQ `queue.dlq` bound to
 * it with key `queue.dlq`; the main queue, dead-lettering to `queue.dlx` with key `queue.dlq`;
 * and the retry queue `queue.retry` with x-message-ttl retryDelayMs, dead-lettering through the
 * default exchange back to `queue`. All durable. Repeatable.
 */
export async function setupRetryTopology(connection: ChannelModel, queue: string, options: RetryOptions): Promise<void> {
  // TODO: a channel; assert the exchange and the three queues with their x- arguments; bind the DLQ.
  void connection;
  void queue;
  void options;
  throw new Error("TODO: setupRetryTopology");
}

/**
 * Consumes `queue` with manual acks. For each delivery: read x-retry-count (0 if absent), call
 * `handler({ messageId, body, retryCount })`, and
 * - on success: ack;
 * - on failure with retryCount < maxRetries: publish a copy to `queue.retry` with
 *   x-retry-count + 1, on a confirm channel, and ack the original only once the copy is confirmed;
 * - on failure with retryCount >= maxRetries: to the DLQ (reject without requeue).
 * Resolves once the consumer is registered; stop() cancels it.
 */
export async function startRetryConsumer(connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions): Promise<RetryConsumer> {
  // TODO: which kind of channel tells you when the broker has a message you published?
  // TODO: consume; where does the retry count live, so that a restart goes on counting?
  // TODO: on failure: the copy first, confirmed, then the ack. Or the DLQ after the last retry.
  void connection;
  void queue;
  void handler;
  void options;
  throw new Error("TODO: startRetryConsumer");
}
