// Valid: consumes before it binds (the consumer is registered first, the bindings last), a channel-wide (global) prefetch of 5, a promise queue per subscription, and a publishTick that returns a promise.
import type { Channel, ConsumeMessage } from "amqplib";
import type { PriceSubscription, SubscribeOptions, Tick, TickHandler } from "msglab/contracts/price-feed";

export async function declareFeed(ch: Channel, exchange: string): Promise<void> {
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false });
}

export async function publishTick(ch: Channel, exchange: string, tick: Tick): Promise<void> {
  ch.publish(exchange, ["price", tick.symbol].join("."), Buffer.from(JSON.stringify(tick), "utf8"), { persistent: false });
}

function asTick(msg: ConsumeMessage): Tick | undefined {
  try {
    const v: unknown = JSON.parse(msg.content.toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Tick) : undefined;
  } catch {
    return undefined;
  }
}

export async function subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription> {
  const { queue } = await ch.assertQueue("", { exclusive: true, autoDelete: true, durable: false, arguments: { "x-max-length": options.maxBacklog, "x-overflow": "drop-head" } });
  await ch.prefetch(5, true);
  let queueDone: Promise<unknown> = Promise.resolve();
  let cancelled = false;
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (msg === null) return;
    queueDone = queueDone.then(async () => {
      const tick = asTick(msg);
      if (tick !== undefined && !cancelled) {
        try {
          await onTick(tick);
        } catch {
          // dropped
        }
      }
      ch.ack(msg);
    });
  });
  const keys = symbols.includes("*") ? ["price.*"] : Array.from(new Set(symbols), (s) => `price.${s}`);
  for (const key of keys) await ch.bindQueue(queue, exchange, key);
  return {
    queue,
    stop: () => {
      cancelled = true;
      return ch.cancel(consumerTag).then(() => undefined);
    },
  };
}
