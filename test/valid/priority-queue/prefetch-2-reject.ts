// Valid: prefetch 2 with two handler calls side by side, each settled on its own with basic.reject (requeue true for a failed order, false for a body that is not JSON); priorities clamped with comparisons before rounding
import type { Channel, ConsumeMessage } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

const MAX_PRIORITY = 10;

/** A durable classic queue that keeps up to 11 priority levels (0..10). */
export async function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  // amqplib turns `maxPriority` into the `x-max-priority` argument. Quorum queues cannot take
  // it on RabbitMQ 3.x, so this stays a classic queue (the default type).
  await ch.assertQueue(queue, { durable: true, maxPriority: MAX_PRIORITY });
}

/** Round, then clamp into 0..10: the broker would treat 99 as 10, but amqplib throws on -5. */
function clampPriority(priority: number): number {
  if (!(priority > 0)) return 0; // NaN, zero, negatives
  return priority >= MAX_PRIORITY ? MAX_PRIORITY : Math.round(priority);
}

export function publishOrder(ch: Channel, queue: string, order: Order, priority: number): void {
  ch.sendToQueue(queue, Buffer.from(JSON.stringify(order), "utf8"), {
    persistent: true,
    priority: clampPriority(priority),
    contentType: "application/json",
  });
}

export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  // One unacked message at a time: the backlog stays on the broker, where priorities apply.
  // basic.qos must come before basic.consume; it only affects consumers created after it.
  await ch.prefetch(2);
  const inFlight = new Set<Promise<void>>();

  const work = async (msg: ConsumeMessage): Promise<void> => {
    let order: Order;
    try {
      order = JSON.parse(msg.content.toString("utf8")) as Order;
    } catch {
      // Not JSON: retrying cannot fix it, so drop it (or dead-letter it, if the queue has a DLX).
      settle(() => ch.reject(msg, false));
      return;
    }
    try {
      await handle(order);
    } catch {
      settle(() => ch.reject(msg, true));
      return;
    }
    settle(() => ch.ack(msg));
  };

  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (msg === null) return; // the broker cancelled the consumer (queue deleted)
      const p = work(msg);
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
    },
    { noAck: false },
  );

  return {
    async stop() {
      await ch.cancel(consumerTag);
      await Promise.allSettled([...inFlight]);
    },
  };
}

/** Acking on a channel that has closed throws; the broker redelivers those messages anyway. */
function settle(fn: () => void): void {
  try {
    fn();
  } catch {
    // channel closed
  }
}
