// Valid: a channel-wide (global) prefetch of 1, then().catch() chains instead of async/await, and stop() closes the consumer's channel instead of cancelling by tag
import type { Channel } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

export function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  return ch.assertQueue(queue, { durable: true, maxPriority: 10 }).then(() => undefined);
}

const clamp = (p: number): number => (Number.isFinite(p) ? Math.min(10, Math.max(0, Math.round(p))) : p > 0 ? 10 : 0);

export function publishOrder(ch: Channel, queue: string, order: Order, priority: number): void {
  ch.sendToQueue(queue, Buffer.from(JSON.stringify(order)), { persistent: true, priority: clamp(priority) });
}

export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  await ch.prefetch(1, true);
  const settle = (f: () => void) => {
    try {
      f();
    } catch {
      // closed
    }
  };
  await ch.consume(queue, (msg) => {
    if (msg === null) return;
    let order: Order;
    try {
      order = JSON.parse(msg.content.toString("utf8"));
    } catch {
      settle(() => ch.reject(msg, false));
      return;
    }
    handle(order)
      .then(() => settle(() => ch.ack(msg)))
      .catch(() => settle(() => ch.nack(msg, false, true)));
  });
  return {
    async stop() {
      // Closing the channel cancels its consumer on the broker; close-ok means it is done.
      await ch.close();
    },
  };
}
