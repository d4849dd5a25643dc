// Valid: classes; the XPUB socket reports every subscribe and unsubscribe (verbosity allSubsUnsubs) and the publisher counts subscribers per prefix; publish() returns nothing and feeds a send pump (an array drained by one async loop); the subscriber reads with for-await over the socket.
import { Subscriber, XPublisher } from "zeromq";
import type { PricePublisher, PriceSubscription, PublisherOptions, SubscriberOptions, Tick, TickHandler } from "msglab/contracts/price-feed-zeromq";

const topic = (symbol: string) => "price." + symbol + "|";

class FeedPublisher implements PricePublisher {
  private readonly counts = new Map<string, number>();
  private readonly waiters = new Set<{ topic: string; done: () => void }>();
  private readonly outbox: string[][] = [];
  private pumping = false;

  constructor(private readonly socket: XPublisher) {
    void this.watch();
  }

  private async watch(): Promise<void> {
    try {
      for await (const [m] of this.socket) {
        if (!m?.length) continue;
        const prefix = m.subarray(1).toString();
        const n = (this.counts.get(prefix) ?? 0) + (m[0] === 1 ? 1 : -1);
        if (n > 0) this.counts.set(prefix, n);
        else this.counts.delete(prefix);
        for (const w of [...this.waiters]) {
          if (this.live(w.topic)) {
            this.waiters.delete(w);
            w.done();
          }
        }
      }
    } catch {
      // closed
    }
  }

  private live(t: string): boolean {
    for (const prefix of this.counts.keys()) if (t.startsWith(prefix)) return true;
    return false;
  }

  publish(tick: Tick): void {
    this.outbox.push([topic(tick.symbol), JSON.stringify(tick)]);
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.outbox.length) await this.socket.send(this.outbox.shift()!);
    } catch {
      // closed
    } finally {
      this.pumping = false;
    }
  }

  waitForSubscriber(symbol: string): Promise<void> {
    const t = topic(symbol);
    if (this.live(t)) return Promise.resolve();
    return new Promise((done) => this.waiters.add({ topic: t, done }));
  }

  async close(): Promise<void> {
    this.socket.close();
  }
}

export async function startPublisher(endpoint: string, options: PublisherOptions): Promise<PricePublisher> {
  const socket = new XPublisher();
  socket.sendHighWaterMark = options.sendHighWaterMark;
  socket.verbosity = "allSubsUnsubs";
  await socket.bind(endpoint);
  return new FeedPublisher(socket);
}

class FeedSubscription implements PriceSubscription {
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(
    private readonly socket: Subscriber,
    private readonly onTick: TickHandler,
  ) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    try {
      for await (const frames of this.socket) {
        if (this.stopped) break;
        if (frames.length !== 2) continue;
        let tick: Tick | null = null;
        try {
          const v = JSON.parse(String(frames[1]));
          if (v && typeof v === "object" && !Array.isArray(v)) tick = v as Tick;
        } catch {
          tick = null;
        }
        if (tick) await this.onTick(tick).catch(() => {});
      }
    } catch {
      // closed
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.socket.close();
    await this.done;
  }
}

export async function subscribe(endpoint: string, symbols: string[], onTick: TickHandler, options: SubscriberOptions): Promise<PriceSubscription> {
  const socket = new Subscriber();
  socket.receiveHighWaterMark = options.receiveHighWaterMark;
  socket.connect(endpoint);
  const prefixes = symbols.length === 1 && symbols[0] === "*" ? ["price."] : [...new Set(symbols)].map(topic);
  socket.subscribe(...prefixes);
  return new FeedSubscription(socket, onTick);
}
