// Valid: prefetch 2, one order at a time through an internal queue, and cumulative acks (ack(msg, true)) that are safe because every earlier delivery is settled by then; stop() cancels and hands back what was not started
import type { Channel, ConsumeMessage } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

export async function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, maxPriority: 10 });
}

export function publishOrder(ch: Channel, queue: string, order: Order, priority: number): void {
  const n = Number.isNaN(priority) ? 0 : Math.max(0, Math.min(10, Math.round(priority)));
  ch.publish("", queue, Buffer.from(JSON.stringify(order), "utf8"), { persistent: true, priority: n });
}

export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  await ch.prefetch(2);
  const waiting: ConsumeMessage[] = [];
  let busy = false;
  let stopped = false;
  let idle: Promise<void> = Promise.resolve();

  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    try {
      for (let msg = waiting.shift(); msg && !stopped; msg = waiting.shift()) {
        let order: Order | undefined;
        try {
          order = JSON.parse(msg.content.toString("utf8")) as Order;
        } catch {
          order = undefined;
        }
        try {
          if (order === undefined) {
            ch.nack(msg, false, false);
            continue;
          }
          try {
            await handle(order);
          } catch {
            ch.nack(msg, false, true);
            continue;
          }
          // One at a time, so every delivery before this one is already acked or nacked.
          ch.ack(msg, true);
        } catch {
          // channel closed
        }
      }
    } finally {
      busy = false;
    }
  };

  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (!msg) return;
    waiting.push(msg);
    idle = pump();
  });

  return {
    stop: async () => {
      await ch.cancel(consumerTag);
      stopped = true;
      await idle;
      // Deliveries never started go back to the queue at once.
      for (const msg of waiting.splice(0)) {
        try {
          ch.nack(msg, false, true);
        } catch {
          // channel closed
        }
      }
    },
  };
}
