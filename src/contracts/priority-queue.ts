/**
 * Contract for the priority-queue exercise (02-rabbitmq/priority-queue).
 *
 * The learner exports, from `priority-queue.ts`:
 *
 * ```ts
 * declarePriorityQueue(ch: Channel, queue: string): Promise<void>
 * publishOrder(ch: Channel, queue: string, order: Order, priority: number): void | Promise<void>
 * consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer>
 * ```
 *
 * `Channel` is amqplib's promise-API channel. The grader opens the connection, hands the learner
 * a channel on it, and watches the queue from a connection of its own.
 */
import type { Channel } from "amqplib";

/** How urgent an order is. The lab publishes urgent at 10, normal at 5 and bulk at 1. */
export type OrderKind = "urgent" | "normal" | "bulk";

/** One line of an order. */
export interface OrderLine {
  sku: string;
  qty: number;
}

/**
 * An order. The message body is exactly `JSON.stringify(order)` (UTF-8), and the consumer hands
 * the handler `JSON.parse` of the body: every field, nested lines included, must survive the trip.
 */
export interface Order {
  /** Unique per order. */
  id: string;
  kind: OrderKind;
  customer: string;
  lines: OrderLine[];
}

/**
 * Does the work for one order. The order counts as done only when the returned promise
 * resolves; if it rejects, the order is not done and must come back.
 */
export type OrderHandler = (order: Order) => Promise<void>;

/** What `consumeOrders` returns: a running consumer. */
export interface PriorityConsumer {
  /** Cancels the consumer on the broker (no further deliveries) and resolves once it is cancelled. */
  stop(): Promise<void>;
}

/**
 * Declares `queue`: durable, a classic queue (not quorum, not exclusive, not auto-delete), with
 * the argument `x-max-priority` 10 and no other arguments. Declaring an existing queue again
 * with the same settings must succeed and keep the messages already in it.
 */
export type DeclarePriorityQueue = (ch: Channel, queue: string) => Promise<void>;

/** The highest priority the queue accepts (its `x-max-priority`). */
export const MAX_PRIORITY = 10;

/**
 * Publishes `order` to `queue` through the default exchange: body `JSON.stringify(order)`,
 * persistent (delivery mode 2), and the message property `priority` set to
 * `clampPriority(priority)`. Out-of-range priorities are not errors: 99 is sent as 10, -5 as 0.
 */
export type PublishOrder = (ch: Channel, queue: string, order: Order, priority: number) => void | Promise<void>;

/**
 * The priority rule, spelled out: round to the nearest integer (`Math.round`: 7.6 → 8,
 * 7.4 → 7), then clamp to 0..MAX_PRIORITY. The learner writes their own; this is the spec.
 * Examples: 99 → 10, -5 → 0, 7.6 → 8, 10 → 10, 0 → 0.
 */
export type ClampPriority = (priority: number) => number;

/**
 * Consumes `queue` with manual acks and a small prefetch (1 is right; the grader accepts up to
 * 3), so the broker keeps the backlog and can hand over an urgent order as soon as one
 * arrives. For each delivery: parse the JSON body, call `handle(order)`, and ack only after it
 * resolves. If `handle` rejects, nack the delivery with requeue so the order comes back.
 * Resolves once the consumer is registered on the broker.
 */
export type ConsumeOrders = (ch: Channel, queue: string, handle: OrderHandler) => Promise<PriorityConsumer>;

/** The learner's module, as the grader sees it. */
export interface PriorityQueueSubmission {
  declarePriorityQueue: DeclarePriorityQueue;
  publishOrder: PublishOrder;
  consumeOrders: ConsumeOrders;
}
