/**
 * Contract for the publisher-confirms exercise (02-rabbitmq/publisher-confirms).
 *
 * The learner exports, from `publisher.ts`:
 *
 * ```ts
 * createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher>
 * ```
 *
 * `ChannelModel` is amqplib's promise-API connection. The grader opens it (sometimes through a
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

/** A publisher bound to one exchange, on a channel in confirm mode. */
export interface Publisher {
  /**
   * Publishes `event` to the publisher's exchange with `routingKey`, as a message that is:
   * persistent (delivery mode 2); `contentType` "application/json"; `messageId` a new unique id
   * (unique across publishers and restarts too: a random UUID); `timestamp` the publish time in
   * whole **seconds** since the epoch (AMQP's timestamp unit).
   *
   * Resolves to `{ messageId }` only once the broker has confirmed (basic.ack) **this**
   * message. Rejects if the broker nacks it, or if the channel or connection closes before its
   * confirm arrives: then nobody knows whether the broker has the message, and the caller
   * must be told. Several calls may be in flight at once; each one settles on its own
   * message's confirm, not on another message's. A nack must not break the publisher: later
   * calls work as usual.
   */
  publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt>;
  /**
   * Closes every channel the publisher opened. It does not close the connection (that belongs
   * to the caller, who may use it for other things) and does not delete the exchange (consumers'
   * queues are bound to it).
   */
  close(): Promise<void>;
}

/**
 * Declares `exchange` as a durable topic exchange (not auto-delete, not internal) on the given
 * connection, and resolves to a publisher for it once the exchange exists. Declaring it again
 * when it already exists (a second publisher, a restart) must succeed and keep its bindings.
 */
export type CreatePublisher = (connection: ChannelModel, exchange: string) => Promise<Publisher>;

/** The learner's module, as the grader sees it. */
export interface PublisherConfirmsSubmission {
  createPublisher: CreatePublisher;
}
