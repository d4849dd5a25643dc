/**
 * Contract for the publisher-confirms exercise (02-rabbitmq/publisher-confirms).
 *
 * The learner exports, from `publisher.ts`:
 *
 * ```ts
 * createPublisher(connection: ChannelModel, exchange: string, options?: PublisherOptions): Promise<Publisher>
 * ```
 *
 * `ChannelModel` is amqplib's promise-API connection. The grader opens it (often through a
 * chaos proxy that can hold the broker's confirms or cut the connection), hands it over, and
 * watches the exchange from a connection of its own.
 */
import type { ChannelModel } from "amqplib";

/**
 * A domain event: any JSON-serialisable object. The message body is exactly
 * `JSON.stringify(event)` in UTF-8, and the grader compares `JSON.parse(body)` with what it passed.
 */
export type DomainEvent = Record<string, unknown>;

/** What a successful `publish()` resolves to. */
export interface PublishReceipt {
  /** The `messageId` property of the message that was published and confirmed. */
  messageId: string;
}

/** The default of {@link PublisherOptions.confirmTimeoutMs}: 10 seconds. */
export const DEFAULT_CONFIRM_TIMEOUT_MS = 10_000;

export interface PublisherOptions {
  /**
   * The deadline of every `publish()`: how long, counted from the moment `publish()` is called,
   * it waits for that message's confirm. When the deadline passes without an ack or a nack,
   * `publish()` rejects (never resolves): nobody knows whether the broker has the message.
   * Not earlier: until the deadline, only the message's own confirm, or the channel closing,
   * settles it. Each publish has its own deadline (not the first one's, not the publisher's).
   * Default {@link DEFAULT_CONFIRM_TIMEOUT_MS} (10 000 ms).
   */
  confirmTimeoutMs?: number;
}

/** A publisher bound to one exchange, on a channel in confirm mode. */
export interface Publisher {
  /**
   * Publishes `event` to the publisher's exchange with `routingKey`, as a message that is:
   * persistent (delivery mode 2); `contentType` "application/json"; `messageId` a new unique id
   * (unique across publishers and restarts too: a random UUID); `timestamp` the publish time in
   * whole **seconds** since the epoch (AMQP's timestamp unit).
   *
   * Settles exactly once, on the first of these:
   * - the broker acks (basic.ack) **this** message: resolves to `{ messageId }`;
   * - the broker nacks it: rejects;
   * - the channel or connection closes before its confirm arrived: rejects, at once (not at the
   *   deadline): nobody knows whether the broker has the message, and the caller must be told;
   * - its deadline (`confirmTimeoutMs` after the call) passes without a confirm: rejects.
   *
   * Several calls may be in flight at once; each one settles on its own message's confirm, not
   * on another message's (a confirm that arrives after its publish timed out settles nothing
   * else). A nack or a timeout must not break the publisher: later calls work as usual. Once the
   * connection is gone, a new call rejects (it cannot reach the broker).
   *
   * When the broker closes the publisher's channel (a publish to an exchange that is gone, 404,
   * or that clients may not publish to, 403): publishes already acked have resolved; every one
   * still waiting rejects at once; a later call rejects at once (or settles on a new channel's
   * confirm, if the publisher opens one), never waits out its deadline. Listen for the channel's
   * `error` event: without a listener amqplib's emit throws, and the whole connection fails.
   * The error is that channel's alone: other publishers on the connection keep working.
   */
  publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt>;
  /**
   * Closes every channel the publisher opened. It does not close the connection (that belongs
   * to the caller, who may use it for other things) and does not delete the exchange (consumers'
   * queues are bound to it). When the channel is gone already (the broker closed it, the
   * connection dropped), there is nothing to close: it resolves.
   */
  close(): Promise<void>;
}

/**
 * Declares `exchange` as a durable topic exchange (not auto-delete, not internal) on the given
 * connection, and resolves to a publisher for it once the exchange exists. Declaring it again
 * when it already exists (a second publisher, a restart) must succeed and keep its bindings.
 * Several publishers may share one connection, each with its own options.
 */
export type CreatePublisher = (connection: ChannelModel, exchange: string, options?: PublisherOptions) => Promise<Publisher>;

/** The learner's module, as the grader sees it. */
export interface PublisherConfirmsSubmission {
  createPublisher: CreatePublisher;
}
