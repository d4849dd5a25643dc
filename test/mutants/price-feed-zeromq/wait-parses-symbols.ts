// Mutant: waitForSubscriber reads each subscription as a symbol (price.AAPL| → AAPL) or price.: the empty subscription and a prefix without its delimiter cover the symbol, and are ignored
// @targets waitForSubscriber() resolves only once a matching subscription has arrived, and then no tick is lost
// The price feed over ZeroMQ PUB/SUB: topics ended by "|" so a prefix never matches another
// symbol, an XPUB publisher that knows its subscriptions (the cure for the slow joiner), and
// high-water marks that drop ticks for a subscriber that falls behind instead of blocking.
import { Subscriber, XPublisher } from "zeromq";
import type { PricePublisher, PriceSubscription, PublisherOptions, SubscriberOptions, Tick, TickHandler } from "msglab/contracts/price-feed-zeromq";

const topicOf = (symbol: string) => `price.${symbol}|`;

export async function startPublisher(endpoint: string, options: PublisherOptions): Promise<PricePublisher> {
  const socket = new XPublisher({ sendHighWaterMark: options.sendHighWaterMark });
  await socket.bind(endpoint);

  // Live subscriptions, as the XPUB socket reports them: byte 1 + prefix to subscribe, byte 0 +
  // prefix when the last subscriber of that prefix unsubscribes or goes away.
  // The symbols subscribers asked for ("price.AAPL|" → AAPL), and whether one takes every tick ("price.").
  const subscriptions = new Set<string>();
  let waiters: { topic: string; resolve: () => void }[] = [];
  const symbolOf = (topic: string) => (topic.startsWith("price.") && topic.endsWith("|") ? topic.slice(6, -1) : null);
  const matched = (topic: string) => subscriptions.has("price.") || (symbolOf(topic) !== null && subscriptions.has(symbolOf(topic)!));
  void (async () => {
    try {
      for await (const [message] of socket) {
        if (!message || message.length === 0) continue;
        const prefix = message.subarray(1).toString("utf8");
        const key = prefix === "price." ? prefix : symbolOf(prefix);
        if (key === null) continue;
        if (message[0] === 1) subscriptions.add(key);
        else if (message[0] === 0) subscriptions.delete(key);
        waiters = waiters.filter((w) => {
          if (!matched(w.topic)) return true;
          w.resolve();
          return false;
        });
      }
    } catch {
      // The socket was closed.
    }
  })();

  // zeromq.js allows one send at a time per socket: each send waits for the one before it. A PUB
  // socket never blocks on a full subscriber queue (it drops), so this chain never stalls.
  let last: Promise<void> = Promise.resolve();
  return {
    publish(tick: Tick): Promise<void> {
      const frames = [topicOf(tick.symbol), JSON.stringify(tick)];
      const sent = last.then(() => socket.send(frames));
      last = sent.catch(() => {});
      return sent;
    },
    waitForSubscriber(symbol: string): Promise<void> {
      const topic = topicOf(symbol);
      if (matched(topic)) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push({ topic, resolve }));
    },
    async close(): Promise<void> {
      socket.close();
    },
  };
}

export async function subscribe(endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions): Promise<PriceSubscription> {
  const socket = new Subscriber({ receiveHighWaterMark: options.receiveHighWaterMark });
  socket.connect(endpoint);
  if (symbols.includes("*")) socket.subscribe("price.");
  else for (const symbol of new Set(symbols)) socket.subscribe(topicOf(symbol));

  let closed = false;
  // One message at a time: the next receive waits for onTick, so a backlog stays in ZeroMQ's
  // queues, bounded by the high-water marks, and never piles up here.
  const loop = (async () => {
    while (!closed) {
      let frames: Buffer[];
      try {
        frames = await socket.receive();
      } catch {
        return; // closed
      }
      if (frames.length !== 2) continue;
      let tick: unknown;
      try {
        tick = JSON.parse(frames[1]!.toString("utf8"));
      } catch {
        continue;
      }
      if (tick === null || typeof tick !== "object" || Array.isArray(tick) || closed) continue;
      try {
        await onTick(tick as Tick);
      } catch {
        // A failed tick is the handler's business; the feed goes on.
      }
    }
  })();
  return {
    async close(): Promise<void> {
      closed = true;
      socket.close();
      await loop;
    },
  };
}
