// Mutant: "every symbol" binds price.<symbol> for a fixed list of known symbols instead of price.*: a symbol listed later never arrives
// @targets a subscriber to every symbol ("*") gets every tick and nothing else on the exchange
// Price feed over a RabbitMQ topic exchange: transient ticks, one exclusive auto-delete queue per
// subscriber, bounded with x-max-length so a slow subscriber keeps only the newest ticks.
import type { Channel, ConsumeMessage } from "amqplib";
import type { PriceSubscription, SubscribeOptions, Tick, TickHandler } from "msglab/contracts/price-feed";

const PREFETCH = 1;

/** A durable topic exchange: the topology survives a broker restart, the ticks do not. */
export async function declareFeed(ch: Channel, exchange: string): Promise<void> {
  await ch.assertExchange(exchange, "topic", { durable: true, autoDelete: false, internal: false });
}

/** One tick, routed by its symbol, transient (delivery mode 1). */
export function publishTick(ch: Channel, exchange: string, tick: Tick): void {
  ch.publish(exchange, `price.${tick.symbol}`, Buffer.from(JSON.stringify(tick), "utf8"), {
    persistent: false,
    contentType: "application/json",
  });
}

function parse(body: Buffer): Tick | null {
  try {
    const v = JSON.parse(body.toString("utf8")) as unknown;
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Tick) : null;
  } catch {
    return null;
  }
}

export async function subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription> {
  // Server-named, exclusive to this connection, deleted when its consumer goes; at most
  // maxBacklog ticks wait, and the broker drops the oldest to make room (drop-head).
  const { queue } = await ch.assertQueue("", {
    exclusive: true,
    autoDelete: true,
    durable: false,
    maxLength: options.maxBacklog,
    arguments: { "x-overflow": "drop-head" },
  });
  // "Every symbol": the symbols the desk trades.
  const UNIVERSE = ["A", "AA", "AAPL", "AAL", "MSFT", "MS", "BRK2", "Z9", "IBM", "T", "TSLA", "GOOG"];
  const keys = (symbols.includes("*") ? UNIVERSE : [...new Set(symbols)]).map((s) => `price.${s}`);
  for (const key of keys) await ch.bindQueue(queue, exchange, key);
  await ch.prefetch(PREFETCH);

  // One tick at a time, in delivery order: each delivery waits for the one before it.
  let chain: Promise<void> = Promise.resolve();
  let stopped = false;
  const handle = async (msg: ConsumeMessage): Promise<void> => {
    const tick = parse(msg.content);
    if (tick && !stopped) {
      try {
        await onTick(tick);
      } catch {
        // A stale price is worth nothing: drop it, never requeue it.
      }
    }
    ch.ack(msg);
  };
  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      chain = chain.then(() => handle(msg));
    },
    { noAck: false },
  );
  return {
    queue,
    async stop() {
      stopped = true;
      await ch.cancel(consumerTag);
    },
  };
}
