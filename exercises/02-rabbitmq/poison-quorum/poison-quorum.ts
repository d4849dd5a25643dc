// Poison messages without blocking the queue: a quorum queue counts failed deliveries, and
// dead-letters a message once its limit is spent. Read README.md for the contract;
// `msglab run poison-quorum` grades this file.
import type { Channel } from "amqplib";
import type { JobConsumer, JobHandler, PoisonQueueSpec } from "msglab/contracts/poison-quorum";

/**
 * Declares spec.deadLetterQueue (durable) and spec.queue: durable, quorum, with x-delivery-limit
 * spec.deliveryLimit and a dead-letter route to spec.deadLetterQueue; from RabbitMQ 3.10 on also
 * at-least-once dead-lettering. Calling it again keeps the messages in both.
 */
export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  // TODO: declare the dead-letter queue.
  // TODO: read the broker's version (ch.connection.serverProperties.version): which arguments
  //       exist from 3.10 on, and what does 4.x do when you set no delivery limit?
  // TODO: declare the work queue with its arguments.
  throw new Error("TODO: declarePoisonQueue");
}

/**
 * Consumes `queue` with manual acks and a prefetch: each delivery's job goes to `handle`; ack it
 * when the handler resolves, give it back with basic.reject (requeue) when it rejects. Keep no
 * count of your own. Resolves once the consumer is registered; stop() cancels it.
 */
export async function consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer> {
  // TODO: set a prefetch before consuming.
  // TODO: consume with manual acks; parse the body, call handle, then settle that delivery.
  //       How do you tell the broker "this delivery failed" so that it counts on every version?
  // TODO: return { stop } that cancels the consumer.
  throw new Error("TODO: consumeJobs");
}
