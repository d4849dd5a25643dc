// Mutant: prefetch 2, and a finished order is acked only once every earlier delivery is settled (one cumulative ack over the finished prefix): an order that finished waits for its ack behind one still in progress, keeping its prefetch slot full
// @targets an order still in progress is not acked when a later one finishes
import type { Channel, ConsumeMessage } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

export async function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-max-priority": 10 } });
}

function priorityOf(given: number): number {
  if (!(given > 0)) return 0; // NaN, zero and negatives
  if (given >= 10) return 10;
  return Math.round(given);
}

export async function publishOrder(ch: Channel, queue: string, order: Order, priority: number): Promise<void> {
  ch.sendToQueue(queue, Buffer.from(JSON.stringify(order), "utf8"), { deliveryMode: 2, priority: priorityOf(priority) });
}

export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  await ch.prefetch(2);
  // Deliveries in the order they arrived, each with its state.
  const window: { msg: ConsumeMessage; state: "busy" | "done" | "settled" }[] = [];
  const flush = () => {
    // Ack the longest finished prefix with one cumulative ack; drop what is settled from the front.
    let last: ConsumeMessage | null = null;
    while (window.length && window[0]!.state !== "busy") {
      const e = window.shift()!;
      if (e.state === "done") last = e.msg;
    }
    if (last) {
      try {
        ch.ack(last, true);
      } catch {
        // channel gone: the broker requeues them
      }
    }
  };
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (!msg) return;
    const entry = { msg, state: "busy" as "busy" | "done" | "settled" };
    let order: Order;
    try {
      order = JSON.parse(msg.content.toString("utf8")) as Order;
    } catch {
      try {
        ch.reject(msg, false);
      } catch {}
      return;
    }
    window.push(entry);
    handle(order).then(
      () => {
        entry.state = "done";
        flush();
      },
      () => {
        entry.state = "settled";
        try {
          ch.nack(msg, false, true);
        } catch {}
        flush();
      },
    );
  });
  return {
    stop: async () => {
      await ch.cancel(consumerTag);
    },
  };
}
