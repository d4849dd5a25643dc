/**
 * Contract for the batch-confirms exercise (02-rabbitmq/batch-confirms).
 *
 * The learner exports, from `batch-publisher.ts`:
 *
 * ```ts
 * createBatchPublisher(connection: ChannelModel, exchange: string, options?: BatchPublisherOptions): Promise<BatchPublisher>
 * ```
 *
 * `ChannelModel` is amqplib's promise-API connection. The grader opens it (through a proxy that
 * can hold the broker's confirms, delay every frame, or cut the connection), hands it over, and
 * watches the exchange from a connection of its own.
 */
import type { ChannelModel } from "amqplib";

/**
 * A domain event: any JSON-serialisable object. The message body is exactly
 * `JSON.stringify(event)` in UTF-8.
 */
export type DomainEvent = Record<string, unknown>;

/** One message of a batch. */
export interface OutgoingMessage {
  /**
   * Chosen by the caller, unique within the batch (and in practice everywhere): it becomes the
   * message's `messageId` property, and it is how a failure names the message.
   */
  messageId: string;
  /** The routing key this message is published with (messages of one batch may differ). */
  routingKey: string;
  event: DomainEvent;
}

/** What a successful `publishBatch()` resolves to. */
export interface BatchReceipt {
  /** The messageIds of the batch, in the order they were given: every one was acked. */
  messageIds: string[];
}

/**
 * How a failed `publishBatch()` rejects: an `Error` with an own property `failedIds`. Build it
 * any way you like, e.g. `Object.assign(new Error("2 of 500 messages were not confirmed"), { failedIds })`.
 */
export interface BatchPublishError extends Error {
  /**
   * The messageIds of every message of the batch that the broker did NOT ack: nacked, or still
   * without a confirm when the channel closed or the deadline passed. Each once, in batch order.
   * Never an id that was acked.
   */
  failedIds: string[];
}

/** The default of {@link BatchPublisherOptions.confirmTimeoutMs}: 30 seconds. */
export const DEFAULT_BATCH_CONFIRM_TIMEOUT_MS = 30_000;

export interface BatchPublisherOptions {
  /**
   * The deadline of every `publishBatch()` call, counted from the call: when it passes with some
   * messages of the batch still unconfirmed, the call rejects (never resolves) with those in
   * `failedIds` (and any nacked ones). Not earlier: until the deadline, only confirms or the
   * channel closing settle the call. Default {@link DEFAULT_BATCH_CONFIRM_TIMEOUT_MS}.
   */
  confirmTimeoutMs?: number;
}

/** A publisher for one exchange, on a channel in confirm mode. */
export interface BatchPublisher {
  /**
   * Publishes every message of the batch to the publisher's exchange, each with its own routing
   * key, as a persistent message (delivery mode 2) with `contentType` "application/json" and
   * `messageId` from the message. Body: `JSON.stringify(event)`.
   *
   * **All of them first, then one wait**: the batch is published without waiting for any
   * confirm in between (not one by one, not in chunks), and then the call waits until the
   * broker has answered for every message of the batch. It settles once, on the first of:
   * - every message of the batch has its confirm: resolves with `{ messageIds }` if all were
   *   acked; rejects with a {@link BatchPublishError} naming exactly the nacked ones if any was
   *   nacked (so it waits for every answer, not only the first nack);
   * - the channel or connection closes before every confirm arrived (the network, or the broker
   *   closing the channel, say for an exchange deleted under you): rejects at once, with the
   *   nacked and the unconfirmed ones in `failedIds`; the channel's error event must not escape
   *   as an uncaught exception;
   * - the deadline passes: rejects, with the nacked and the unconfirmed ones in `failedIds`.
   *
   * It never resolves on a timer, and never before the last confirm of the batch has arrived.
   * An empty batch resolves at once with `{ messageIds: [] }`. Batches may hold thousands of
   * messages. Several calls may be in flight at once on one publisher: each settles on its own
   * messages' confirms, never on another batch's. A failed batch does not break the publisher.
   * Once the connection is gone, a new call rejects.
   */
  publishBatch(messages: OutgoingMessage[]): Promise<BatchReceipt>;
  /**
   * Closes every channel the publisher opened; not the connection, not the exchange. Resolves
   * when called again, and when the connection is already gone (nothing is left to close).
   */
  close(): Promise<void>;
}

/**
 * Declares `exchange` as a durable topic exchange (re-declaring an existing one must work) and
 * resolves to a publisher for it once the exchange exists.
 */
export type CreateBatchPublisher = (connection: ChannelModel, exchange: string, options?: BatchPublisherOptions) => Promise<BatchPublisher>;

/** The learner's module, as the grader sees it. */
export interface BatchConfirmsSubmission {
  createBatchPublisher: CreateBatchPublisher;
}
