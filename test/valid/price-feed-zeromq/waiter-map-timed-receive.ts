// Valid: waiters kept per symbol in a Map and re-checked on every subscription change; publish() awaits a promise queue built with async/await; the subscriber polls with a receive timeout so close() stops the loop before it closes the socket.
import { Subscriber, XPublisher } from "zeromq";
import type { PricePublisher, PriceSubscription, PublisherOptions, SubscriberOptions, Tick, TickHandler } from "msglab/contracts/price-feed-zeromq";

export async function startPublisher(endpoint: string, options: PublisherOptions): Promise<PricePublisher> {
  const xpub = new XPublisher({ sendHighWaterMark: options.sendHighWaterMark, linger: 0 });
  await xpub.bind(endpoint);
  const prefixes = new Set<string>();
  const waiting = new Map<string, (() => void)[]>();
  const covered = (symbol: string) => {
    const t = `price.${symbol}|`;
    for (const p of prefixes) if (t.startsWith(p)) return true;
    return false;
  };
  const recheck = () => {
    for (const [symbol, list] of waiting) {
      if (!covered(symbol)) continue;
      waiting.delete(symbol);
      for (const resolve of list) resolve();
    }
  };
  (async () => {
    for (;;) {
      const [msg] = await xpub.receive();
      if (msg && msg.length > 0) {
        const p = msg.toString("utf8", 1);
        if (msg[0] === 1) prefixes.add(p);
        if (msg[0] === 0) prefixes.delete(p);
        recheck();
      }
    }
  })().catch(() => undefined);

  let tail: Promise<unknown> = Promise.resolve();
  async function send(frames: string[], before: Promise<unknown>): Promise<void> {
    await before.catch(() => undefined);
    await xpub.send(frames);
  }
  return {
    async publish(tick) {
      const p = send([`price.${tick.symbol}|`, JSON.stringify(tick)], tail);
      tail = p;
      await p;
    },
    waitForSubscriber(symbol) {
      if (covered(symbol)) return Promise.resolve();
      return new Promise<void>((resolve) => waiting.set(symbol, [...(waiting.get(symbol) ?? []), resolve]));
    },
    async close() {
      xpub.close();
    },
  };
}

export async function subscribe(endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions): Promise<PriceSubscription> {
  const sub = new Subscriber({ receiveHighWaterMark: options.receiveHighWaterMark, receiveTimeout: 50, linger: 0 });
  sub.connect(endpoint);
  if (symbols.includes("*")) sub.subscribe("price.");
  else for (const s of symbols) sub.subscribe(`price.${s}|`);
  let running = true;
  const loop = (async () => {
    while (running) {
      let frames: Buffer[];
      try {
        frames = await sub.receive();
      } catch (e) {
        if ((e as { code?: string }).code === "EAGAIN" && running) continue;
        return;
      }
      if (frames.length !== 2 || !running) continue;
      let tick: Tick;
      try {
        tick = JSON.parse(frames[1]!.toString());
      } catch {
        continue;
      }
      if (typeof tick !== "object" || tick === null || Array.isArray(tick)) continue;
      try {
        await onTick(tick);
      } catch {
        // next tick
      }
    }
  })();
  return {
    async close() {
      running = false;
      await loop;
      sub.close();
    },
  };
}
