/**
 * Contract for the retry-dlq-consumer exercise (02-rabbitmq/retry-dlq-consumer).
 *
 * The learner exports, from `retry-consumer.ts`:
 *
 * ```ts
 * setupRetryTopology(connection: ChannelModel, queue: string, options: RetryOptions): Promise<void>
 * startRetryConsumer(connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions): Promise<RetryConsumer>
 * ```
 *
 * `ChannelModel` is amqplib's promise-API connection. The grader opens it (through a proxy that
 * sees every frame, holds the broker's confirms and stops frames where a crash should land),
 * hands it over, and watches the queues from a connection of its own.
 *
 * The topology, for a main queue named `q` (names are the main queue's name plus a suffix):
 *
 * | name            | what                                                                                   |
 * |-----------------|----------------------------------------------------------------------------------------|
 * | `q`             | durable classic queue; `x-dead-letter-exchange` `q.dlx`, `x-dead-letter-routing-key` `q.dlq` |
 * | `q.retry`       | durable classic queue; `x-message-ttl` retryDelayMs, `x-dead-letter-exchange` "" (the default exchange), `x-dead-letter-routing-key` `q` |
 * | `q.dlx`         | durable direct exchange                                                                |
 * | `q.dlq`         | durable classic queue, bound to `q.dlx` with routing key `q.dlq`                       |
 *
 * A failed message goes to `q.retry`, waits there retryDelayMs, expires, and the broker
 * dead-letters it back to `q`. After `maxRetries` retries it goes to `q.dlq` instead.
 */
import type { ChannelModel } from "amqplib";

/** Suffixes of the topology's names: `queue + RETRY_SUFFIX` is the retry queue, and so on. */
export const RETRY_SUFFIX = ".retry";
export const DLX_SUFFIX = ".dlx";
export const DLQ_SUFFIX = ".dlq";

/**
 * The header that carries how many times a message has been retried. It lives in the message,
 * so a consumer that restarts (or another consumer) goes on counting where the last one stopped.
 *
 * Never count with the broker's `x-death` header instead: its `count` went up on every trip
 * through the retry queue up to RabbitMQ 3.12, but from 3.13 it no longer increments when a
 * client republishes the message (which is what a retry is), and 4.x ignores an `x-death` a
 * client sets. Code that counts with it retries forever on a newer broker.
 */
export const RETRY_COUNT_HEADER = "x-retry-count";

export interface RetryOptions {
  /**
   * How many times a failed message is retried before it goes to the DLQ. A message is handled
   * at most maxRetries + 1 times (the first delivery, then one per retry). 0: no retries at all.
   */
  maxRetries: number;
  /** How long each retry waits in the retry queue (its `x-message-ttl`), in ms. */
  retryDelayMs: number;
}

/** What the handler gets for each delivery. */
export interface IncomingMessage {
  /** The message's `messageId` property. */
  messageId: string;
  /** `JSON.parse` of the body (UTF-8). Bodies are always JSON in this exercise. */
  body: unknown;
  /** The message's `x-retry-count` header (0 when it has none): how many times it was retried before. */
  retryCount: number;
}

/**
 * Does the work for one message. The message counts as handled only when the returned promise
 * resolves; a rejection is a failure, to be retried (or dead-lettered after maxRetries).
 */
export type MessageHandler = (message: IncomingMessage) => Promise<void>;

export interface RetryConsumer {
  /** Cancels the consumer on the broker and resolves once the broker has confirmed it (basic.cancel-ok). */
  stop(): Promise<void>;
}

/**
 * Declares the topology above for `queue` (all durable, with exactly the arguments in the table:
 * no others). Calling it again when it exists must succeed and keep the messages in every queue.
 */
export type SetupRetryTopology = (connection: ChannelModel, queue: string, options: RetryOptions) => Promise<void>;

/**
 * Consumes `queue` with manual acks (a prefetch of your choice) and calls `handler` for each
 * delivery, with `retryCount` read from the message's `x-retry-count` header (0 if absent).
 * It may assume the topology exists as `setupRetryTopology` declares it (in some checks the
 * grader declares it itself).
 *
 * - `handler` resolves: ack the delivery.
 * - `handler` rejects and `retryCount < maxRetries`: publish a copy to the retry queue through
 *   the default exchange (routing key `queue + ".retry"`): the same body bytes, the same
 *   `messageId` and other properties, persistent, and the original's headers with
 *   `x-retry-count` set to `retryCount + 1` (an integer). Publish it on a channel in confirm
 *   mode, and ack the original only once the broker has **acked the copy**: acked earlier, a
 *   crash in between loses the message; acked after, a crash in between leaves a duplicate at
 *   worst. If the copy is nacked, or the channel closes first, do not ack the original.
 * - `handler` rejects and `retryCount >= maxRetries`: the message goes to the DLQ with its body,
 *   its `messageId` and `x-retry-count` equal to maxRetries: reject it without requeue (the main
 *   queue's dead-letter exchange routes it to the DLQ), or publish it to the DLQ yourself
 *   (confirmed) and then ack it.
 *
 * Never nack or reject a failed message with requeue (it would come straight back, with no wait
 * and no count), never count retries in memory (a restart would start again from zero), and
 * never use the `x-death` header's count (see {@link RETRY_COUNT_HEADER}).
 *
 * Resolves once the consumer is registered on the broker (after basic.consume-ok).
 */
export type StartRetryConsumer = (connection: ChannelModel, queue: string, handler: MessageHandler, options: RetryOptions) => Promise<RetryConsumer>;

/** The learner's module, as the grader sees it. */
export interface RetryDlqSubmission {
  setupRetryTopology: SetupRetryTopology;
  startRetryConsumer: StartRetryConsumer;
}
