// Valid: a client-named queue (a random UUID) with x-max-length as a raw argument and the default overflow; prefetch 10 with a hand-written in-process work list; publishTick with no delivery mode at all (transient by default) that waits for the channel to drain; stop() closes the channel.
import { randomUUID } from "node:crypto";
import type { Channel, ConsumeMessage } from "amqplib";
import type { PriceSubscription, SubscribeOptions, Tick, TickHandler } from "msglab/contracts/price-feed";

export async function declareFeed(ch: Channel, exchange: string): Promise<void> {
  await ch.assertExchange(exchange, "topic");
}

export async function publishTick(ch: Channel, exchange: string, tick: Tick): Promise<void> {
  const ok = ch.publish(exchange, "price." + tick.symbol, Buffer.from(JSON.stringify(tick)));
  if (!ok) await new Promise<void>((resolve) => ch.once("drain", () => resolve()));
}

export async function subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription> {
  const queue = `price-feed.${randomUUID()}`;
  await ch.assertQueue(queue, { exclusive: true, autoDelete: true, durable: false, arguments: { "x-max-length": options.maxBacklog } });
  const all = symbols.length === 1 && symbols[0] === "*";
  for (const symbol of all ? ["*"] : symbols) await ch.bindQueue(queue, exchange, "price." + symbol);
  await ch.prefetch(10);

  const work: ConsumeMessage[] = [];
  let busy = false;
  let closed = false;
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (work.length && !closed) {
      const msg = work.shift()!;
      let tick: Tick | undefined;
      try {
        tick = JSON.parse(msg.content.toString()) as Tick;
      } catch {
        tick = undefined;
      }
      if (tick && typeof tick === "object" && !Array.isArray(tick)) await onTick(tick).catch(() => undefined);
      if (!closed) ch.ack(msg);
    }
    busy = false;
  };
  await ch.consume(queue, (msg) => {
    if (msg) work.push(msg);
    void pump();
  });
  return {
    queue,
    async stop() {
      closed = true;
      await ch.close();
    },
  };
}
