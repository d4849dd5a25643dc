/**
 * Contract for the poison-quorum exercise (02-rabbitmq/poison-quorum).
 *
 * The learner exports, from `poison-quorum.ts`:
 *
 * ```ts
 * declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void>
 * consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer>
 * ```
 *
 * `Channel` is amqplib's promise-API channel. The grader opens the connection, hands the learner
 * a channel on it (through a proxy of its own, which sees every frame), and watches the queues
 * from a connection of its own.
 *
 * The idea: a quorum queue counts, for every message, how many times a delivery of it failed.
 * With `x-delivery-limit` set and a dead-letter route, the broker itself moves a message that
 * keeps failing (a poison message) to the dead-letter queue, and the consumer never counts
 * anything. The consumer only says "this delivery failed" the way that counts on every version.
 */
import type { Channel } from "amqplib";

/** The names and the limit for one work queue. */
export interface PoisonQueueSpec {
  /** The work queue: a quorum queue. */
  queue: string;
  /** Where poison messages end up: a durable queue of its own. */
  deadLetterQueue: string;
  /**
   * The queue's `x-delivery-limit` (an integer, at least 1): how many failed deliveries of one
   * message the broker allows. The delivery after the last allowed failure does not happen: the
   * broker dead-letters the message instead. So a message that always fails is delivered
   * exactly `deliveryLimit + 1` times, and then reaches the dead-letter queue.
   */
  deliveryLimit: number;
}

/**
 * Declares both queues. Safe to call again (every process start does): it succeeds and keeps the
 * messages already in them.
 *
 * - `deadLetterQueue`: durable, not exclusive, not auto-delete, quorum (`x-queue-type: quorum`)
 *   or classic, with no other arguments. Declare it first, so a dead-lettered message always has
 *   somewhere to go.
 * - `queue`: durable, not exclusive, not auto-delete, with exactly these arguments:
 *   - `x-queue-type`: `"quorum"`;
 *   - `x-delivery-limit`: `spec.deliveryLimit` (a number, not a string). Always set it: RabbitMQ
 *     4.x gives every quorum queue a delivery limit of 20 when none is set, 3.x none at all;
 *     your limit must not depend on which one runs;
 *   - `x-dead-letter-exchange`: `""` (the default exchange) and `x-dead-letter-routing-key`:
 *     `spec.deadLetterQueue`, so a dead-lettered message lands in the dead-letter queue;
 *   - when the broker is RabbitMQ 3.10 or newer (see {@link supportsAtLeastOnceDeadLettering}):
 *     `x-dead-letter-strategy: "at-least-once"` and `x-overflow: "reject-publish"` (at-least-once
 *     dead-lettering needs reject-publish; with any other overflow the broker silently falls back
 *     to at-most-once). On an older broker, neither of the two.
 *
 * The broker's version is in the connection's server properties:
 * `ch.connection.serverProperties.version`, e.g. `"3.10.8"`, `"3.13.7"`, `"4.1.0-rc.1"`.
 */
export type DeclarePoisonQueue = (ch: Channel, spec: PoisonQueueSpec) => Promise<void>;

/**
 * The rule for the version string, spelled out (the learner writes their own): take the leading
 * `major.minor` numbers; at-least-once dead-lettering exists from 3.10 on, so 3.10.0 and every
 * later 3.x, and every 4.x and later, say yes; 3.9.29 and 3.8.x say no. Compare numbers, not
 * strings or floats: "3.9" > "3.10" as strings, and parseFloat("3.10.8") is 3.1.
 */
export type SupportsAtLeastOnceDeadLettering = (version: string) => boolean;

/** One job: every message body is exactly `JSON.stringify(job)` (UTF-8), with `messageId` = `job.id`. */
export interface Job {
  id: string;
  kind: string;
  data: Record<string, unknown>;
}

/**
 * Does the work for one job. The job is done only when the returned promise resolves; if it
 * rejects, this delivery failed. It may take a while, and it may fail the same job any number
 * of times (a poison job fails every time).
 */
export type JobHandler = (job: Job) => Promise<void>;

/** What `consumeJobs` returns: a running consumer (a plain object or a class instance). */
export interface JobConsumer {
  /**
   * Cancels the consumer on the broker and resolves only once the broker has confirmed it
   * (`await ch.cancel(consumerTag)`; closing the channel and awaiting the close also does).
   * Nothing reaches the handler afterwards.
   */
  stop(): Promise<void>;
}

/**
 * Consumes `queue` (declared by `declarePoisonQueue`) with manual acks and a prefetch set with
 * `ch.prefetch(n)` before `ch.consume` (any n from 1 to 50). For each delivery: `JSON.parse` the
 * body, call `handle(job)`, then settle that delivery, on its own (never `multiple`):
 *
 * - `handle` resolved: `ch.ack(msg)`.
 * - `handle` rejected: `ch.reject(msg, true)`: basic.reject WITH requeue, every time it fails.
 *   The broker counts it as a failed delivery and dead-letters the message once the limit is
 *   spent. Not `ch.nack(msg, false, true)`: from RabbitMQ 4.3 on, a basic.nack with requeue
 *   does not count toward the delivery limit (only basic.reject does), so a poison message would
 *   come back forever. Not without requeue either: a job that fails once may succeed next time,
 *   and deciding when to give up is the broker's job (it counts across restarts; you don't).
 *   Not an ack plus a republished copy: that resets the broker's count.
 *
 * Keep no count of your own. Resolve once the consumer is registered on the broker (after
 * basic.consume-ok).
 */
export type ConsumeJobs = (ch: Channel, queue: string, handle: JobHandler) => Promise<JobConsumer>;

/** The learner's module, as the grader sees it. */
export interface PoisonQuorumSubmission {
  declarePoisonQueue: DeclarePoisonQueue;
  consumeJobs: ConsumeJobs;
}
