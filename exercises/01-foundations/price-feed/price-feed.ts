// Price feed over a RabbitMQ topic exchange: live ticks, nothing kept.
// Read README.md for the contract; `msglab run price-feed` grades this file.
import type { Channel } from "amqplib";
import type { PriceSubscription, SubscribeOptions, Tick, TickHandler } from "msglab/contracts/price-feed";

/** Declares the feed's exchange: a durable topic exchange (not auto-delete, no arguments). */
export async function declareFeed(ch: Channel, exchange: string): Promise<void> {
  // TODO: assert the exchange. Which exchange type routes on the words of a routing key?
  throw new Error("TODO: declareFeed");
}

/**
 * Publishes one tick to `exchange` with routing key `price.<symbol>`, body exactly
 * JSON.stringify(tick) in UTF-8, transient (delivery mode 1: a price is stale in a second).
 */
export function publishTick(ch: Channel, exchange: string, tick: Tick): void {
  // TODO: publish it. Which publish option decides whether the broker writes it to disk?
  throw new Error("TODO: publishTick");
}

/**
 * Subscribes to `symbols` (["*"]: every symbol) with a queue of the subscriber's own:
 * exclusive, auto-delete, not durable, x-max-length = options.maxBacklog (drop-head).
 * Manual acks, a prefetch of 1 to 10, one onTick at a time in delivery order; a tick whose
 * onTick rejects is dropped, not requeued; a body that is not a JSON object never reaches onTick.
 * Resolves once the queue is bound and the consumer registered; stop() once the broker has
 * cancelled the consumer (the queue then goes with it).
 */
export async function subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription> {
  // TODO: declare the subscriber's own queue. What bounds it, and what happens when it is full?
  // TODO: bind it: one routing key per symbol. Which wildcard means "exactly one more word"?
  // TODO: limit how many unacked ticks the broker pushes to this process, then consume
  //       with manual acks; call onTick one tick at a time and ack after it settles.
  // TODO: return { queue, stop }.
  throw new Error("TODO: subscribe");
}
