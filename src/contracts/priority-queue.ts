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
 * resolves; if it rejects, the order is not done and must come back, however many times it
 * fails. It may take as long as it likes, and several calls may run at once if your consumer
 * starts them so (a prefetch above 1): they can then finish in any order.
 */
export type OrderHandler = (order: Order) => Promise<void>;

/** What `consumeOrders` returns: a running consumer (a plain object or a class instance). */
export interface PriorityConsumer {
  /**
   * Cancels the consumer on the broker (no further deliveries) and resolves only once the
   * broker has confirmed it (basic.cancel-ok: `await ch.cancel(tag)`; closing the channel and
   * awaiting the close also does). Whether it also waits for handler calls still running is
   * up to you.
   */
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
 * Publishes `order` to `queue` through the default exchange: body `JSON.stringify(order)` in
 * UTF-8 (exactly those bytes: no pretty-printing, no extra fields), persistent (delivery mode 2),
 * and the message property `priority` set to `clampPriority(priority)`. No number is an error:
 * 99 is sent as 10, -5 as 0, NaN as 0, Infinity as 10.
 */
export type PublishOrder = (ch: Channel, queue: string, order: Order, priority: number) => void | Promise<void>;

/**
 * The priority rule, spelled out: round to the nearest integer (`Math.round`: 7.6 → 8,
 * 7.5 → 8, 7.4 → 7, -0.6 → -1), then clamp to 0..MAX_PRIORITY. NaN (not a number at all) is 0,
 * the lowest: garbage never jumps the line, and never throws (amqplib itself refuses NaN, as it
 * refuses negatives and anything above 255). The learner writes their own; this is the spec.
 * Examples: 99 → 10, 256 → 10, Infinity → 10, -5 → 0, -Infinity → 0, NaN → 0, 7.6 → 8,
 * 10.4 → 10, 10 → 10, 0 → 0.
 */
export type ClampPriority = (priority: number) => number;

/**
 * Consumes `queue` with manual acks and a small prefetch, set with basic.qos before
 * basic.consume, so the broker keeps the backlog and can hand over an urgent order as soon as
 * one arrives. 1 is right; 2 and 3 are accepted; 4 or more is not: with prefetch p, p - 1 bulk
 * orders already in your client go before an urgent one, and the grader allows 2.
 *
 * For each delivery: parse the JSON body, call `handle(order)`, and ack that delivery only after
 * its call resolves. An ack settles only the delivery it names: with calls running side by side,
 * `ack(msg, true)` (multiple) would also ack earlier deliveries whose calls have not finished.
 * If `handle` rejects, nack the delivery with requeue, every time it fails, so the order comes
 * back until it succeeds.
 *
 * A body that is not JSON (`JSON.parse` throws: plain text, cut-off JSON, an empty body) is
 * never handed to `handle`, and retrying cannot fix it: reject it without requeue
 * (`ch.reject(msg, false)` or `ch.nack(msg, false, false)`), so the broker drops it, or
 * dead-letters it where the queue has a dead-letter exchange. Not ack: that would claim it was
 * handled. Then go on with the next delivery. (A body that is JSON is passed on as parsed.)
 *
 * Resolves once the consumer is registered on the broker (after basic.consume-ok).
 */
export type ConsumeOrders = (ch: Channel, queue: string, handle: OrderHandler) => Promise<PriorityConsumer>;

/** The learner's module, as the grader sees it. */
export interface PriorityQueueSubmission {
  declarePriorityQueue: DeclarePriorityQueue;
  publishOrder: PublishOrder;
  consumeOrders: ConsumeOrders;
}
