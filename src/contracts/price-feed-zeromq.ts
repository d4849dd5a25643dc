/**
 * Contract for the price-feed-zeromq exercise (01-foundations/price-feed-zeromq): the price feed
 * of the price-feed exercise, brokerless, over ZeroMQ PUB/SUB (the `zeromq` package, version 6).
 *
 * The learner exports, from `price-feed-zeromq.ts`:
 *
 * ```ts
 * startPublisher(endpoint: string, options: PublisherOptions): Promise<PricePublisher>
 * subscribe(endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions): Promise<PriceSubscription>
 * ```
 *
 * Endpoints are `ipc://` paths the grader picks (Unix sockets: the sandbox has no network). The
 * publisher binds; subscribers connect. Where a check grades one side, the grader is the other
 * side, with sockets of its own.
 *
 * ## The wire format
 *
 * Every tick is one message of exactly two frames:
 *
 * 1. the topic: `price.` + symbol + `|`, e.g. `price.AAPL|` (UTF-8);
 * 2. the body: exactly `JSON.stringify(tick)` (UTF-8).
 *
 * ZeroMQ filters on a byte PREFIX of the first frame. A subscription to `price.AA` would also match
 * `price.AAPL` and `price.AAL`; the `|` that ends every topic (and never appears in a symbol) makes
 * `price.AA|` match AA and nothing else. `price.` matches every tick.
 */
import type { BookLevel, Tick, TickHandler } from "./price-feed.ts";

export type { BookLevel, Tick, TickHandler };

/** Ends every topic frame; symbols never contain it. */
export const TOPIC_END = "|";

export interface PublisherOptions {
  /**
   * The send high-water mark (ZMQ_SNDHWM, `sendHighWaterMark`): how many messages may wait for
   * each subscriber on the publisher's side. Once a subscriber's queue is full, PUB/SUB drops what
   * it cannot queue for that subscriber; it never blocks the publisher. Set it on the socket before
   * binding. The grader picks it, from 20 to 50000.
   */
  sendHighWaterMark: number;
}

/** What `startPublisher` returns (a plain object or a class instance). */
export interface PricePublisher {
  /**
   * Sends `tick` as the two frames above. Resolves (or returns) once the tick has been handed to
   * ZeroMQ: queued for every subscriber whose subscription matches it and whose queue has room,
   * dropped for the others, dropped when nobody subscribes. It never waits for a subscriber, nor
   * for a slow one, and never keeps a tick for later (no history: a subscriber that joins later
   * never gets it). The grader calls it for tick after tick without waiting for the previous
   * call: zeromq.js allows one send in progress per socket, so queue the sends.
   */
  publish(tick: Tick): void | Promise<void>;
  /**
   * Resolves once the publisher knows of a live subscription that matches `symbol`'s topic: a
   * subscription whose prefix is a prefix of `price.<symbol>|` (`price.AAPL|`, `price.`, or the
   * empty subscription). At once when there is one already. A subscription withdrawn since (its
   * subscriber unsubscribed or went away) no longer counts. Only the publisher can know this, and
   * only an XPUB socket (`XPublisher`) tells it: every subscribe and unsubscribe reaches it as a
   * message (byte 1 or 0, then the prefix). A timer, or a connection event, is not a subscription.
   */
  waitForSubscriber(symbol: string): Promise<void>;
  /** Closes the socket. */
  close(): Promise<void>;
}

export interface SubscriberOptions {
  /**
   * The receive high-water mark (ZMQ_RCVHWM, `receiveHighWaterMark`): how many ticks may wait in
   * the subscriber's ZeroMQ queue while `onTick` is busy. Set it before connecting. The grader
   * picks it, from 10 to 100000.
   */
  receiveHighWaterMark: number;
}

/** What `subscribe` returns (a plain object or a class instance). */
export interface PriceSubscription {
  /**
   * Stops the subscription: `onTick` is not called again once it has resolved, and the socket is
   * closed (the publisher sees the subscription go). It may wait for an `onTick` call in progress.
   */
  close(): Promise<void>;
}

/**
 * Starts a publisher bound to `endpoint`, with `options.sendHighWaterMark` set before binding.
 * Resolves once it is bound.
 */
export type StartPublisher = (endpoint: string, options: PublisherOptions) => Promise<PricePublisher>;

/**
 * Connects a SUB socket to `endpoint` (`options.receiveHighWaterMark` set before connecting) and
 * subscribes to `price.<symbol>|` for each symbol, or to `price.` when `symbols` is `["*"]`: those
 * subscriptions and no others (never the empty one, never a topic without its `|`), so the
 * filtering happens at the publisher and nothing else crosses the socket. Resolves once connect()
 * and subscribe() have been called: ZeroMQ never tells a subscriber when its subscription has
 * reached the publisher (that is what `waitForSubscriber` is for, on the other side).
 *
 * Then it receives messages one at a time: for a two-frame message whose body is a JSON object, it calls
 * `onTick(JSON.parse(body))` and awaits it before receiving the next one; a rejected `onTick` is
 * ignored (the next tick still comes); a message that is not two frames, or whose body is not a
 * JSON object (not JSON at all, or JSON `null`, a number, a string, an array), is skipped and never
 * reaches `onTick`. It never reads ahead into a buffer of its own: while
 * `onTick` is busy, ticks wait in ZeroMQ's queues, where the high-water marks bound them.
 */
export type Subscribe = (endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions) => Promise<PriceSubscription>;

/** The learner's module, as the grader sees it. */
export interface PriceFeedZeromqSubmission {
  startPublisher: StartPublisher;
  subscribe: Subscribe;
}
