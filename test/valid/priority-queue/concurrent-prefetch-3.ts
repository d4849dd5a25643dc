// Valid: prefetch 3 with the handlers of up to three orders running side by side, each acked on its own (ack(msg), never multiple); a class instance as the consumer; basic.reject for bodies that are not JSON
import type { Channel, ConsumeMessage } from "amqplib";
import type { Order, OrderHandler, PriorityConsumer } from "msglab/contracts/priority-queue";

const LEVELS = 10;

export async function declarePriorityQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, arguments: { "x-max-priority": LEVELS } });
}

function toPriority(p: number): number {
  if (p !== p) return 0; // NaN
  const r = Math.round(p);
  return r < 0 ? 0 : r > LEVELS ? LEVELS : r;
}

export async function publishOrder(ch: Channel, queue: string, order: Order, priority: number): Promise<void> {
  const ok = ch.sendToQueue(queue, Buffer.from(JSON.stringify(order)), { deliveryMode: 2, priority: toPriority(priority) });
  if (!ok) await new Promise<void>((resolve) => ch.once("drain", () => resolve()));
}

class Consumer implements PriorityConsumer {
  private tag = "";
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly ch: Channel,
    private readonly handle: OrderHandler,
  ) {}

  async start(queue: string): Promise<void> {
    await this.ch.prefetch(3);
    const { consumerTag } = await this.ch.consume(queue, (msg) => {
      if (!msg) return;
      const p = this.process(msg);
      this.running.add(p);
      p.finally(() => this.running.delete(p)).catch(() => {});
    });
    this.tag = consumerTag;
  }

  private async process(msg: ConsumeMessage): Promise<void> {
    let order: Order;
    try {
      order = JSON.parse(msg.content.toString());
    } catch {
      this.safely(() => this.ch.reject(msg, false));
      return;
    }
    let ok = true;
    try {
      await this.handle(order);
    } catch {
      ok = false;
    }
    this.safely(() => (ok ? this.ch.ack(msg) : this.ch.nack(msg, false, true)));
  }

  private safely(fn: () => void): void {
    try {
      fn();
    } catch {
      // The channel is gone: the broker requeues what was not acked.
    }
  }

  async stop(): Promise<void> {
    await this.ch.cancel(this.tag);
  }
}

export async function consumeOrders(ch: Channel, queue: string, handle: OrderHandler): Promise<PriorityConsumer> {
  const c = new Consumer(ch, handle);
  await c.start(queue);
  return c;
}
