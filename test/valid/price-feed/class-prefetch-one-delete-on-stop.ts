// Valid: a class whose consumer relies on prefetch 1 alone for one-tick-at-a-time (no chaining), rejects failed ticks and bad bodies without requeue, binds with Promise.all, and stops by deleting its queue (the broker cancels the consumer).
import type { Channel, ConsumeMessage } from "amqplib";
import type { PriceSubscription, SubscribeOptions, Tick, TickHandler } from "msglab/contracts/price-feed";

export async function declareFeed(ch: Channel, exchange: string): Promise<void> {
  await ch.assertExchange(exchange, "topic", { durable: true });
}

export function publishTick(ch: Channel, exchange: string, tick: Tick): void {
  ch.publish(exchange, `price.${tick.symbol}`, Buffer.from(JSON.stringify(tick), "utf8"), { deliveryMode: 1 });
}

class Subscription implements PriceSubscription {
  private stopping = false;
  constructor(
    private readonly ch: Channel,
    readonly queue: string,
    private readonly onTick: TickHandler,
  ) {}

  async start(): Promise<void> {
    await this.ch.consume(this.queue, (msg) => void this.handle(msg), { noAck: false });
  }

  private async handle(msg: ConsumeMessage | null): Promise<void> {
    if (!msg || this.stopping) return;
    let tick: Tick;
    try {
      tick = JSON.parse(msg.content.toString("utf8")) as Tick;
      if (Object.prototype.toString.call(tick) !== "[object Object]") throw new TypeError("not a tick");
    } catch {
      this.ch.reject(msg, false);
      return;
    }
    try {
      await this.onTick(tick);
      this.ch.ack(msg);
    } catch {
      this.ch.reject(msg, false);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.ch.deleteQueue(this.queue);
  }
}

export async function subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription> {
  const q = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false, maxLength: options.maxBacklog });
  const keys = symbols.includes("*") ? ["price.*"] : symbols.map((s) => `price.${s}`);
  await Promise.all(keys.map((k) => ch.bindQueue(q.queue, exchange, k)));
  await ch.prefetch(1);
  const sub = new Subscription(ch, q.queue, onTick);
  await sub.start();
  return sub;
}
