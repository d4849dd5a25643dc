// Priority queue: urgent orders first, even when a backlog of bulk orders is waiting.
// Read README.md for the contract; `msglab run priority-queue` grades this file.
import type { Channel } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

/**
 * Declares `queue`: durable, classic, with x-max-priority 10 and no other arguments.
 * Calling it again for an existing queue must succeed and keep the messages in it.
 */
export async function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  // TODO: assert the queue. Which option (or x- argument) makes the broker honour priorities?
  throw new Error("TODO: declarePriorityQueue");
}

/**
 * Publishes `order` as JSON (exactly JSON.stringify(order), UTF-8), persistent, with `priority`
 * rounded to the nearest integer and clamped to 0..10 (99 → 10, -5 → 0, 7.6 → 8); NaN is 0.
 * No number is an error.
 */
export function publishOrder(ch: Channel, queue: string, order: Order, priority: number): void {
  // TODO: compute the clamped priority.
  // TODO: send JSON.stringify(order) to the queue, persistent, with that priority.
  throw new Error("TODO: publishOrder");
}

/**
 * Consumes `queue`: manual acks, a small prefetch (1 to 3), ack each delivery only after its
 * `handle(order)` resolves, nack with requeue every time it rejects. A body that is not JSON
 * never reaches `handle`: reject it without requeue. Resolves once the consumer is registered;
 * `stop()` resolves once the broker has cancelled it.
 */
export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  // TODO: limit how many unacked messages the broker may push to this channel (and think
  //       about WHEN that setting takes effect).
  // TODO: consume with manual acks; parse each body (what does not parse?) and call `handle`;
  //       ack or nack.
  // TODO: return { stop } that cancels the consumer.
  throw new Error("TODO: consumeOrders");
}
