/**
 * Contract for the price-feed exercise (01-foundations/price-feed): a live price feed over a
 * RabbitMQ topic exchange.
 *
 * The learner exports, from `price-feed.ts`:
 *
 * ```ts
 * declareFeed(ch: Channel, exchange: string): Promise<void>
 * publishTick(ch: Channel, exchange: string, tick: Tick): void | Promise<void>
 * subscribe(ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions): Promise<PriceSubscription>
 * ```
 *
 * `Channel` is amqplib's promise-API channel. The grader opens every connection (the publisher's
 * and each subscriber's, often in separate processes), hands the learner a channel on it, and
 * watches the broker from a connection of its own.
 *
 * A price tick is worth something for a second or two. Nobody wants yesterday's prices, so the
 * feed keeps nothing: ticks are transient, a subscriber's queue lives exactly as long as the
 * subscriber, and a subscriber that falls behind loses its OLDEST ticks, never the newest.
 */
import type { Channel } from "amqplib";

/** One price level of an order book (the ticks of some feeds carry a few). */
export interface BookLevel {
  bid: number;
  ask: number;
  size: number;
}

/** One price update. */
export interface Tick {
  /** 1 to 6 characters, upper-case letters and digits only: "A", "AA", "AAPL", "BRK2". Never a dot. */
  symbol: string;
  /** Increases by at least 1 from tick to tick of one publisher. */
  seq: number;
  price: number;
  /** When the price was taken, ISO-8601 UTC. */
  time: string;
  /** Optional depth of book. */
  book?: BookLevel[];
}

/** The routing key of a tick: `price.` followed by its symbol, e.g. `price.AAPL`. */
export type TopicOf = (symbol: string) => `price.${string}`;

/** Asks for every symbol when given as the only entry of `symbols`. */
export const ALL_SYMBOLS = "*";

/**
 * Handles one tick. Calls for one subscription come one at a time, in the order the broker
 * delivered the ticks: the next call starts only after the previous one has settled. It may
 * take as long as it likes (that is how a subscriber falls behind), and it may reject: a tick
 * whose handler rejected is dropped, never retried (a price that comes back later is stale).
 */
export type TickHandler = (tick: Tick) => Promise<void>;

export interface SubscribeOptions {
  /**
   * How many ticks may wait in the broker for this subscriber: the queue's `x-max-length`.
   * When it is full, the broker drops the OLDEST waiting tick to make room for the new one
   * (`x-overflow: drop-head`, RabbitMQ's default). The grader picks it, from 2 to 50.
   */
  maxBacklog: number;
}

/** What `subscribe` returns: a running subscription (a plain object or a class instance). */
export interface PriceSubscription {
  /** The name of the subscription's queue (for messages; the grader reads it off the wire). */
  queue: string;
  /**
   * Cancels the consumer and resolves only once the broker has confirmed it (basic.cancel-ok;
   * closing the channel and awaiting the close, or deleting the queue, also do). Once it has
   * resolved, the queue is gone (auto-delete), and `onTick` is not called again.
   */
  stop(): Promise<void>;
}

/**
 * Declares the feed's exchange: type `topic`, durable, not auto-delete, not internal, no
 * arguments. The exchange is infrastructure and survives a broker restart; the ticks do not.
 * Declaring it again must succeed.
 */
export type DeclareFeed = (ch: Channel, exchange: string) => Promise<void>;

/**
 * Publishes `tick` to `exchange` with routing key `price.<symbol>`. The body is exactly
 * `JSON.stringify(tick)` in UTF-8. The message is transient: delivery mode 1 (amqplib:
 * `persistent: false`, or no `persistent` option at all), never 2. A tick nobody subscribes to
 * is simply dropped by the exchange: publishing never waits for a subscriber and never fails
 * for lack of one. May assume the exchange exists.
 */
export type PublishTick = (ch: Channel, exchange: string, tick: Tick) => void | Promise<void>;

/**
 * Subscribes to the ticks of `symbols` (or of every symbol: `["*"]`), on `exchange` (which
 * exists; declaring it again with declareFeed's settings is allowed).
 *
 * - The queue is the subscriber's own: **exclusive, auto-delete, not durable** (a server-named
 *   queue, `assertQueue("")`, is the usual way; any unique name will do), with the argument
 *   **`x-max-length` = `options.maxBacklog`**, and `x-overflow` either absent or `"drop-head"`.
 *   No other arguments. It lives as long as the subscriber: gone when `stop()` resolves, gone
 *   when the subscriber's process dies.
 * - It is bound with routing key `price.<symbol>` for each symbol, or `price.*` for every
 *   symbol: a tick's routing key has exactly two words. Other traffic on the exchange
 *   (`trade.AAPL`, `price.AAPL.depth`, `price`) is not a tick and never reaches the subscriber.
 * - It consumes with **manual acks** and a **prefetch of 1 to 10**, set before consuming, so a
 *   subscriber that falls behind leaves its backlog in the broker, where `x-max-length` bounds
 *   it. Each delivery is acked (or rejected without requeue) once `onTick` has settled for it,
 *   and `onTick` is called for one tick at a time, in delivery order.
 * - A body that is not a JSON object (not JSON at all, or JSON `null`, a number, a string, an
 *   array) is not a tick: it never reaches `onTick`, and is dropped (ack, or
 *   reject without requeue).
 * - A subscriber gets only ticks published after `subscribe()` resolved (no history), and every
 *   one of those as long as it keeps up (a burst bigger than `maxBacklog` while `onTick` is busy
 *   loses its oldest ticks, by design). So `subscribe()` resolves only once the queue is bound and
 *   the broker has registered the consumer (after basic.consume-ok).
 */
export type Subscribe = (ch: Channel, exchange: string, symbols: string[], onTick: TickHandler, options: SubscribeOptions) => Promise<PriceSubscription>;

/** The learner's module, as the grader sees it. */
export interface PriceFeedSubmission {
  declareFeed: DeclareFeed;
  publishTick: PublishTick;
  subscribe: Subscribe;
}
