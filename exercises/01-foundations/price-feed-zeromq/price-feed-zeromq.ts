// The price feed over ZeroMQ PUB/SUB: no broker, topic-prefix filters, high-water marks.
// Read README.md for the contract; `msglab run price-feed-zeromq` grades this file.
import { Subscriber, XPublisher } from "zeromq";
import type { PricePublisher, PriceSubscription, PublisherOptions, SubscriberOptions, Tick, TickHandler } from "msglab/contracts/price-feed-zeromq";

/** The topic frame of a tick: "price." + symbol + "|". Why the "|"? */
const topicOf = (symbol: string) => `price.${symbol}|`;

/**
 * Binds an XPUB socket (options.sendHighWaterMark set before binding) and returns the publisher.
 * publish(): two frames, [topic, JSON.stringify(tick)]; never waits for a subscriber; may be
 * called again before the previous call finished (queue the sends: one send at a time per socket).
 * waitForSubscriber(symbol): resolves once a live subscription matches the symbol's topic.
 */
export async function startPublisher(endpoint: string, options: PublisherOptions): Promise<PricePublisher> {
  // TODO: create the XPublisher with its send high-water mark, and bind it.
  // TODO: read the subscription messages it receives (byte 1 or 0, then the prefix) and keep
  //       the live prefixes; resolve the waiters whose topic one of them matches.
  // TODO: return { publish, waitForSubscriber, close }.
  throw new Error("TODO: startPublisher");
}

/**
 * Connects a SUB socket (options.receiveHighWaterMark set before connecting), subscribes to
 * price.<SYMBOL>| per symbol, or price. for ["*"], and hands each tick to onTick, one at a time:
 * the next receive waits for onTick. Skips what is not a two-frame message with a JSON body.
 */
export async function subscribe(endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions): Promise<PriceSubscription> {
  // TODO: create the Subscriber, connect, subscribe. Which prefixes, exactly?
  // TODO: a receive loop that awaits onTick(tick) before the next receive; catch what it throws.
  // TODO: return { close } that stops the loop and closes the socket.
  throw new Error("TODO: subscribe");
}
